// The example app, with the tern SDK built from this repository:
//   - cargo-ndk builds libtern_ffi.so for each ABI in `tern.abis` into jniLibs;
//   - the workspace's uniffi-bindgen generates the Kotlin bindings from the unstripped
//     library in target/ (with bindings/kotlin/uniffi-android.toml), into
//     build/generated/tern/kotlin;
//   - the idiomatic layer (bindings/kotlin/src: connectTern, events()) is compiled with
//     them.
// Not built in tern's CI (no Android SDK there). See ../README.md.
import org.gradle.api.tasks.Exec

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

val repo: File = rootDir.resolve("../../..").canonicalFile
val ternJniLibs = layout.buildDirectory.dir("generated/tern/jniLibs")
val ternKotlin = layout.buildDirectory.dir("generated/tern/kotlin")
val abis = (findProperty("tern.abis") as String).split(',').map { it.trim() }

fun prop(name: String): String = (findProperty(name) as String?).orEmpty()

val cargoNdk by tasks.registering(Exec::class) {
    description = "Builds libtern_ffi.so for ${abis.joinToString()} with cargo-ndk."
    workingDir = repo
    commandLine(
        listOf("cargo", "ndk") + abis.flatMap { listOf("-t", it) } +
            listOf("-o", ternJniLibs.get().asFile.path, "build", "--release", "-p", "tern-bindings"),
    )
}

val ternBindings by tasks.registering(Exec::class) {
    description = "Generates the Kotlin bindings from the Android library."
    dependsOn(cargoNdk)
    workingDir = repo
    // Any ABI's library carries the same interface description; use the first one's, as
    // cargo left it in target/: uniffi-bindgen reads the symbol table, which cargo-ndk
    // before 4.0 strips from the jniLibs copies.
    val triple = mapOf(
        "arm64-v8a" to "aarch64-linux-android",
        "armeabi-v7a" to "armv7-linux-androideabi",
        "x86_64" to "x86_64-linux-android",
        "x86" to "i686-linux-android",
    ).getValue(abis.first())
    val library = repo.resolve("target/$triple/release/libtern_ffi.so")
    commandLine(
        "cargo", "run", "--quiet", "-p", "uniffi-bindgen", "--",
        "generate", "--library", library.path, "--language", "kotlin", "--no-format",
        "--config", "bindings/kotlin/uniffi-android.toml",
        "--out-dir", ternKotlin.get().asFile.path,
    )
}

android {
    namespace = "dev.tern.example"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.tern.example"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1"
        buildConfigField("String", "TERN_GATEWAY", "\"${prop("tern.gateway")}\"")
        buildConfigField("String", "TERN_USER", "\"${prop("tern.user")}\"")
        buildConfigField("String", "TERN_TOKEN", "\"${prop("tern.token")}\"")
        buildConfigField("String", "TERN_CONTACTS", "\"${prop("tern.contacts")}\"")
        ndk { abiFilters += abis }
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    buildFeatures {
        compose = true
        buildConfig = true
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }

    sourceSets["main"].java.srcDirs(ternKotlin, repo.resolve("bindings/kotlin/src"))
    sourceSets["main"].jniLibs.srcDir(ternJniLibs)
}

tasks.named("preBuild") { dependsOn(ternBindings) }

dependencies {
    // JNA with its native part for Android's ABIs (the @aar, not the desktop jar).
    implementation("net.java.dev.jna:jna:5.15.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
    // The generated code's Android cleaner uses @RequiresApi.
    implementation("androidx.annotation:annotation:1.9.1")

    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.compose.material3:material3")
    implementation("androidx.compose.ui:ui")
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.lifecycle:lifecycle-runtime-ktx:2.8.7")
}
