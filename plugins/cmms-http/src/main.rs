//! The `cmms-http` plugin as an executable: the same code as the `cdylib`, served over
//! stdin/stdout (see `millwright_plugin_sdk::stdio`).

fn main() -> std::process::ExitCode {
    millwright_plugin_cmms_http::serve()
}
