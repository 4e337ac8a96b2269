//! Records the compiler's version for the plugin ABI header (`abi::RUSTC_VERSION`): a plugin
//! built with another rustc is reported by the loader with both versions.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MW_RUSTC_VERSION={version}");
    for (cfg, var) in [
        ("CARGO_CFG_TARGET_ARCH", "MW_TARGET_ARCH"),
        ("CARGO_CFG_TARGET_OS", "MW_TARGET_OS"),
    ] {
        let value = std::env::var(cfg).unwrap_or_else(|_| "unknown".to_owned());
        println!("cargo:rustc-env={var}={value}");
    }
    println!("cargo:rerun-if-env-changed=RUSTC");
}
