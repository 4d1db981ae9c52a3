//! `uniffi-bindgen`: generates the foreign-language bindings of `tern-bindings`, with the
//! very uniffi version its scaffolding was built with. Library mode:
//! `cargo run -p uniffi-bindgen -- generate --library target/debug/libtern_ffi.so
//! --language python --out-dir target/bindings/python`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
