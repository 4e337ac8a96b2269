//! The command line, black-box: `check` and `run` with good and bad configs, exit codes and
//! the wording of errors (file, key path, line, hint).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::binary;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn millwright(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_the_demo_config() {
    // `check` loads the demo's plugins, as boot does.
    for plugin in ["sim", "opcua", "cmms-http"] {
        millwright_tests::build_plugin(plugin, false);
    }
    let demo = millwright_tests::workspace_root().join("configs/demo.toml");
    let out = millwright(&["check", demo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with("demo.toml: ok (node demo, 6 connectors, embedded bus)\n"),
        "{stdout}"
    );
}

#[test]
fn check_reports_an_unknown_key_with_file_key_line_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "plant.toml",
        "[node]\nname = \"n\"\n\n[connectors.press1]\nplugin = \"sim\"\nmax_bach = 50\n",
    );
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: connectors.press1.max_bach: unknown key `max_bach` at line 6 (did you mean `max_batch`?)\n",
            path.display()
        )
    );
}

/// Two `testkit` connectors, `line1` in process and `line2` out of process, with `line1_config`
/// and `line2_config` as their `config` tables.
fn two_testkits(line1_config: &str, line2_config: &str) -> String {
    format!(
        "[node]\nname = \"n\"\n\n\
         [connectors.line1]\nplugin = \"testkit\"\n\n\
         [connectors.line1.config]\n{line1_config}\n\n\
         [connectors.line2]\nplugin = \"testkit\"\nmode = \"out_of_process\"\n\n\
         [connectors.line2.config]\n{line2_config}\n"
    )
}

#[test]
fn check_reports_every_misspelled_plugin_key_with_its_line_and_the_closest_key() {
    support::testkit();
    let dir = tempfile::tempdir().unwrap();
    let text = two_testkits("count = 5\npanic_att = 3", "cont = 5");
    let path = write(dir.path(), "plant.toml", &text);
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line per error: {err}");
    let file = path.display();
    assert!(
        lines[0].starts_with(&format!(
            "error: {file}: connectors.line1.config.panic_att: unknown key `panic_att` at line 9 \
             (did you mean `panic_at`? The config schema of plugin testkit"
        )),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "error: {file}: connectors.line2.config.cont: unknown key `cont` at line 16 (did \
             you mean `count`?"
        )),
        "{err}"
    );
    assert!(
        lines[1].contains("millwright plugin inspect")
            && lines[1].contains("millwright-plugin-testkit"),
        "says where the schema is: {err}"
    );
    assert!(out.stdout.is_empty(), "no `ok`");
}

#[test]
fn check_lists_the_allowed_keys_when_none_is_close_and_every_other_schema_error() {
    support::testkit();
    let dir = tempfile::tempdir().unwrap();
    let text = two_testkits("colour = \"red\"\ncount = \"many\"", "count = 1");
    let path = write(dir.path(), "plant.toml", &text);
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(
            "connectors.line1.config.colour: unknown key `colour` at line 8 (known keys: \
             abort_at, count, hang_at, panic_at,"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "connectors.line1.config.count: \"many\" is not of type \"integer\" at line 9"
        ),
        "{err}"
    );
}

#[test]
fn check_says_ok_for_good_plugin_configs_in_and_out_of_process() {
    support::testkit();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "plant.toml",
        &two_testkits("count = 5\npanic_at = 3", "count = 5"),
    );
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}: ok (node n, 2 connectors, embedded bus)\n",
            path.display()
        )
    );
}

#[test]
fn check_names_a_plugin_it_cannot_load_with_the_path_looked_at_and_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("plugins/libgone.so");
    let old = support::c_library(
        dir.path(),
        "old",
        "void *millwright_plugin_entry_v1(void) { return 0; }\n",
    );
    let path = write(
        dir.path(),
        "plant.toml",
        &format!(
            "[node]\nname = \"n\"\n\n[connectors.a]\nplugin = {gone:?}\n\n\
             [connectors.b]\nplugin = {old:?}\n\n[connectors.c]\nplugin = \"nosuch\"\n"
        ),
    );
    let out = Command::new(binary())
        .args(["check", path.to_str().unwrap()])
        .env("MILLWRIGHT_PLUGIN_PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = path.display();
    assert!(
        err.contains(&format!(
            "error: {file}: connectors.a.plugin: no plugin file at {} at line 5 (build the \
             plugin, or fix the path)",
            gone.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: {file}: connectors.b.plugin: {}: plugin built for plugin ABI 1.x, but this \
             node supports ABI 4.0 to 4.0",
            old.display()
        )),
        "the file and both versions: {err}"
    );
    assert!(
        err.contains(&format!(
            "error: {file}: connectors.c.plugin: no plugin named \"nosuch\": looked for \
             libmillwright_plugin_nosuch.so, libnosuch.so in {},",
            dir.path().display()
        )),
        "the names and directories looked at: {err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn check_reports_every_problem_of_the_node_config_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "plant.toml",
        "[node]\nname = \"a b\"\n\n[supervision]\nmax_restarts = 0\n",
    );
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = path.display();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "error: {file}: node.name: invalid node name \"a b\" at line 2"
        )),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "error: {file}: supervision.max_restarts: max_restarts is 0 at line 5"
        )),
        "{err}"
    );
}

#[test]
fn check_reports_a_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "plant.toml",
        "[node]\nname = \"n\"\n[connectors.press1]\nplugin = \"sim\"\npoll_interval = \"5 parsecs\"\n",
    );
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: connectors.press1.poll_interval: invalid value \"5 parsecs\" at line 5 (expected a duration such as \"500ms\" or \"5s\")\n",
            path.display()
        )
    );

    let path = write(dir.path(), "t.toml", "[node]\nname = 7\n");
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "t.toml: node.name: wrong type: found integer `7` at line 2 (expected a string)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_refuses_a_retired_sims_section_and_says_how_to_write_it_as_a_connector() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "plant.toml",
        "[node]\nname = \"n\"\n\n[sims.press1]\ninterval = \"1s\"\n",
    );
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: {}: sims.press1: ", path.display())),
        "names the file and the key: {err}"
    );
    assert!(err.contains("at line 4"), "names the line: {err}");
    assert!(
        err.contains("[connectors.press1] with plugin = \"sim\"")
            && err.contains("[connectors.press1.config]"),
        "says how to write it: {err}"
    );
}

#[test]
fn check_reports_a_missing_required_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "plant.toml", "[node]\ndata_dir = \"x\"\n");
    let out = millwright(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: node.name: missing required key at line 1 (add `name = ...` to [node])\n",
            path.display()
        )
    );
}

#[test]
fn check_reports_a_missing_file() {
    let out = millwright(&["check", "/nonexistent/plant.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: /nonexistent/plant.toml: cannot read the config file")
    );
}

#[test]
fn run_refuses_an_invalid_config_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = write(
        dir.path(),
        "plant.toml",
        &format!(
            "[node]\nname = \"n\"\ndata_dir = \"{}\"\n[http]\nlisten = \"nowhere\"\n",
            data.display()
        ),
    );
    let out = millwright(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "http.listen: invalid value \"nowhere\" at line 5 (expected an address such as"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!data.exists(), "no data directory, no lock");
}

#[test]
fn run_fails_clearly_when_the_http_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = write(
        dir.path(),
        "plant.toml",
        &format!(
            "[node]\nname = \"pt\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    );
    let out = millwright(&["run", path.to_str().unwrap(), "--log-format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("http: cannot listen on 127.0.0.1:{port}"))
            && stdout.contains("set [http] listen or --http-port to a free port"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("data/millwright.lock").exists(),
        "the lock is released on a failed start"
    );
}

#[test]
fn version_and_help_work() {
    let out = millwright(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("millwright 0.1.0"));
    let out = millwright(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--http-port"));
}

#[test]
fn human_logs_are_readable_lines_with_level_and_fields() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "h.toml",
        &format!(
            "[node]\nname = \"hl\"\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"human\"\n",
            dir.path().join("data")
        ),
    );
    let mut child = Command::new(binary())
        .args(["run", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Reading blocks until the node prints; the node is ready within seconds, and a node that
    // never gets there ends the loop at EOF when it exits (or nextest's timeout kills it).
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("node ready"))
        .expect("a `node ready` line");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!ready.trim_start().starts_with('{'), "not JSON: {ready}");
    assert!(ready.contains("INFO"), "has the level: {ready}");
    assert!(
        ready.contains("node=hl") || ready.contains("node=\"hl\""),
        "has fields: {ready}"
    );
}
