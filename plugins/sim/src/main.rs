//! The `sim` plugin as an executable: the same code as the `cdylib`, served over stdin/stdout
//! (see `millwright_plugin_sdk::stdio`).

fn main() -> std::process::ExitCode {
    millwright_plugin_sim::serve()
}
