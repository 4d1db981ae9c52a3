// Versions that go together (Kotlin 2.1 with its Compose compiler plugin, AGP 8.7);
// not built in tern's CI. See README.md.
plugins {
    id("com.android.application") version "8.7.3" apply false
    id("org.jetbrains.kotlin.android") version "2.1.0" apply false
    id("org.jetbrains.kotlin.plugin.compose") version "2.1.0" apply false
}
