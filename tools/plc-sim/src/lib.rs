//! A simulated PLC: an OPC-UA server (async-opcua's server) on loopback with values that change,
//! for the OPC-UA connector's tests, its benchmark and the demo.
//!
//! What it serves (namespace `urn:millwright:plc-sim:machines`, index [`PlcSim::namespace`], 2 on a
//! default server):
//!
//! | node id | browse path from `Objects` | type | behaviour |
//! |---|---|---|---|
//! | `ns=2;s=Press.Temperature` | `2:Press/2:Temperature` | Double | sine 60 ± 20 |
//! | `ns=2;s=Press.Pressure` | `2:Press/2:Pressure` | Double | ramp 0..100 |
//! | `ns=2;s=Press.Count` | `2:Press/2:Count` | Int64 | +1 per tick |
//! | `ns=2;s=Press.Running` | `2:Press/2:Running` | Boolean | `true` |
//! | `ns=2;s=Press.Setpoint` | `2:Press/2:Setpoint` | Double | writable, constant |
//! | `ns=2;s=Sim.V0000` .. | `2:Sim/2:V0000` .. | Double | sine per variable (phase offset) |
//!
//! The `Sim.V*` block has [`PlcSimOptions::variables`] entries (1,000 for the bench). Values change
//! every [`PlcSimOptions::update_interval`]. `ServerStatus` (`i=2256`) is served by the library.
//!
//! Endpoints: `None` always; `Basic256Sha256` `SignAndEncrypt` when [`PlcSimOptions::secure`]. Users:
//! anonymous, and `operator` / `operator-pw` (see [`USER`], [`PASSWORD`]). The server's own
//! certificate is generated into `pki_dir` on the first start and reused afterwards; client
//! certificates are trusted automatically.
//!
//! Controls on the running [`PlcSim`]: [`set_value`](PlcSim::set_value),
//! [`set_bad`](PlcSim::set_bad) (a node goes Bad quality with a status code),
//! [`freeze`](PlcSim::freeze) (a node stops updating), [`pause`](PlcSim::pause) (every node
//! stops), [`stop`](PlcSim::stop) (start again on the same [`port`](PlcSim::port) to simulate a
//! restart).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::{AccessLevel, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ServerBuilder, ServerEndpoint, ServerHandle, ServerUserToken};
use opcua::types::{
    DataTypeId, DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, QualifiedName,
    StatusCode, Variant,
};
use parking_lot::Mutex;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// The simulator's namespace URI.
pub const NAMESPACE_URI: &str = "urn:millwright:plc-sim:machines";
/// The user name of the username/password user.
pub const USER: &str = "operator";
/// The password of [`USER`].
pub const PASSWORD: &str = "operator-pw";
/// The server's application URI.
pub const APPLICATION_URI: &str = "urn:millwright:plc-sim:server";

const USER_TOKEN_ID: &str = "operator";
const ANONYMOUS: &str = "ANONYMOUS";

/// The named `Press.*` variables.
pub const PRESS_VARIABLES: [&str; 5] = ["Temperature", "Pressure", "Count", "Running", "Setpoint"];

/// How to start a [`PlcSim`].
#[derive(Debug, Clone)]
pub struct PlcSimOptions {
    /// Loopback port to bind; 0 picks a free one.
    pub port: u16,
    /// Host to bind (and to advertise unless `advertised_host` says otherwise).
    pub host: String,
    /// The host written into the endpoint URLs the server advertises (to test a client that
    /// must keep its configured address). `None`: `host`.
    pub advertised_host: Option<String>,
    /// How many `Sim.V*` variables.
    pub variables: usize,
    /// How often values change.
    pub update_interval: Duration,
    /// Offer a `Basic256Sha256` `SignAndEncrypt` endpoint besides `None`.
    pub secure: bool,
    /// Where the server's certificate and key live (generated on first start).
    pub pki_dir: PathBuf,
}

impl PlcSimOptions {
    /// Options for a test: a free port, 10 variables, 100 ms updates, security on, `pki_dir`.
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        Self {
            port: 0,
            host: "127.0.0.1".to_owned(),
            advertised_host: None,
            variables: 10,
            update_interval: Duration::from_millis(100),
            secure: true,
            pki_dir: pki_dir.into(),
        }
    }

    /// The same options on port `port`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The same options with `n` `Sim.V*` variables.
    pub fn variables(mut self, n: usize) -> Self {
        self.variables = n;
        self
    }

    /// The same options updating every `interval`.
    pub fn update_interval(mut self, interval: Duration) -> Self {
        self.update_interval = interval;
        self
    }
}

/// Why the simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum PlcSimError {
    /// The port could not be bound.
    #[error("plc-sim: cannot bind {addr}: {source} (pick another port, or 0 for a free one)")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be built (certificate, config).
    #[error("plc-sim: cannot build the OPC-UA server: {0}")]
    Build(String),
}

#[derive(Debug, Default)]
struct Controls {
    frozen: HashSet<NodeId>,
    /// Bad nodes: the status and the value they keep.
    bad: std::collections::HashMap<NodeId, (StatusCode, Option<Variant>)>,
}

/// A running simulated PLC. Dropping it stops the server.
pub struct PlcSim {
    addr: SocketAddr,
    ns: u16,
    handle: ServerHandle,
    manager: Arc<SimpleNodeManager>,
    controls: Arc<Mutex<Controls>>,
    paused: Arc<AtomicBool>,
    server: Option<JoinHandle<Result<(), String>>>,
    updater: Option<JoinHandle<()>>,
    options: PlcSimOptions,
}

impl std::fmt::Debug for PlcSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlcSim")
            .field("addr", &self.addr)
            .field("ns", &self.ns)
            .finish()
    }
}

/// The node id of `Press.<name>` in namespace `ns`.
pub fn press_node(ns: u16, name: &str) -> NodeId {
    NodeId::new(ns, format!("Press.{name}"))
}

/// The node id of `Sim.V<i>` (four digits) in namespace `ns`.
pub fn sim_node(ns: u16, i: usize) -> NodeId {
    NodeId::new(ns, sim_name(i))
}

fn sim_name(i: usize) -> String {
    format!("Sim.V{i:04}")
}

impl PlcSim {
    /// Starts the server on `options.host:options.port` and the task that changes the values.
    /// Must be called inside a multi-thread tokio runtime (or a current-thread one the caller
    /// keeps driving).
    ///
    /// # Errors
    /// The port cannot be bound, or the server cannot be built (its certificate cannot be
    /// written to `pki_dir`).
    pub async fn start(options: PlcSimOptions) -> Result<PlcSim, PlcSimError> {
        let bind = format!("{}:{}", options.host, options.port);
        let bind_err = |source| PlcSimError::Bind {
            addr: bind.clone(),
            source,
        };
        let addr: SocketAddr = bind.parse().map_err(|e| {
            bind_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{e}"),
            ))
        })?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(bind_err)?;
        socket.set_reuseaddr(true).map_err(bind_err)?;
        socket.bind(addr).map_err(bind_err)?;
        let listener = socket.listen(128).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let port = addr.port();
        let host = options
            .advertised_host
            .clone()
            .unwrap_or_else(|| options.host.clone());

        std::fs::create_dir_all(&options.pki_dir)
            .map_err(|e| PlcSimError::Build(format!("{}: {e}", options.pki_dir.display())))?;
        let users = [ANONYMOUS.to_owned(), USER_TOKEN_ID.to_owned()];
        let mut builder = ServerBuilder::new()
            .application_name("Millwright plc-sim")
            .application_uri(APPLICATION_URI)
            .product_uri("urn:millwright:plc-sim:product")
            .host(host.clone())
            .port(port)
            .discovery_urls(vec![format!("opc.tcp://{host}:{port}/")])
            .pki_dir(options.pki_dir.clone())
            .certificate_path("own/cert.der")
            .private_key_path("private/private.pem")
            .create_sample_keypair(true)
            .trust_client_certs(true)
            .check_cert_time(false)
            .add_user_token(USER_TOKEN_ID, ServerUserToken::user_pass(USER, PASSWORD))
            .add_endpoint("none", ServerEndpoint::new_none("/", &users))
            .default_endpoint("none")
            .max_session_timeout_ms(60_000)
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: NAMESPACE_URI.to_owned(),
                    namespace_index: 2,
                    ..Default::default()
                },
                "plc-sim",
            ));
        if options.secure {
            builder = builder.add_endpoint(
                "basic256sha256",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    &[ANONYMOUS, USER_TOKEN_ID] as &[&str],
                ),
            );
        }
        // The bench subscribes to thousands of items in one subscription.
        builder
            .limits_mut()
            .subscriptions
            .max_monitored_items_per_sub = 100_000;
        let (server, handle) = builder.build().map_err(PlcSimError::Build)?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| PlcSimError::Build("the simple node manager is missing".into()))?;
        let ns = handle
            .get_namespace_index(NAMESPACE_URI)
            .ok_or_else(|| PlcSimError::Build("the plc-sim namespace is missing".into()))?;
        populate(&manager, ns, options.variables);

        let server = tokio::spawn(server.run_with(listener));
        let controls = Arc::new(Mutex::new(Controls::default()));
        let paused = Arc::new(AtomicBool::new(false));
        let updater = tokio::spawn(update_loop(
            handle.clone(),
            manager.clone(),
            ns,
            options.variables,
            options.update_interval,
            controls.clone(),
            paused.clone(),
        ));
        Ok(PlcSim {
            addr,
            ns,
            handle,
            manager,
            controls,
            paused,
            server: Some(server),
            updater: Some(updater),
            options,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `opc.tcp://<host>:<port>/`.
    pub fn endpoint(&self) -> String {
        format!("opc.tcp://{}:{}/", self.options.host, self.port())
    }

    /// The simulator's namespace index.
    pub fn namespace(&self) -> u16 {
        self.ns
    }

    /// The options it was started with (with the port it got).
    pub fn options(&self) -> PlcSimOptions {
        self.options.clone().port(self.port())
    }

    /// The node id of `Press.<name>`.
    pub fn press(&self, name: &str) -> NodeId {
        press_node(self.ns, name)
    }

    /// The node id of `Sim.V<i>`.
    pub fn sim(&self, i: usize) -> NodeId {
        sim_node(self.ns, i)
    }

    /// The server's certificate (DER) as generated into `pki_dir`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn certificate_der(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.options.pki_dir.join("own/cert.der"))
    }

    /// Sets `node` to `value` (Good, now) and keeps it there: the node is frozen until
    /// [`unfreeze`](Self::unfreeze).
    ///
    /// # Errors
    /// The node does not exist.
    pub fn set_value(&self, node: &NodeId, value: impl Into<Variant>) -> Result<(), StatusCode> {
        let mut c = self.controls.lock();
        c.frozen.insert(node.clone());
        c.bad.remove(node);
        self.write(node, DataValue::new_now(value.into()))
    }

    /// Makes `node` Bad quality with `status` (its value stays); it stays Bad until
    /// [`clear_bad`](Self::clear_bad).
    ///
    /// Like a PLC reading a failed sensor, the simulator keeps sampling the node: every update
    /// writes it again (the same value and status, a new timestamp). A subscriber sees one
    /// change (the status); the later writes are not changes. They are needed: async-opcua's
    /// server holds back a change that comes sooner than the sampling interval after the last
    /// one reported, and releases it only on a later write or on a publishing tick past the
    /// held value's time; if the tick comes first, the item is not looked at again until the
    /// next write, so a single write of the Bad value could stay held forever.
    ///
    /// # Errors
    /// The node does not exist.
    pub fn set_bad(&self, node: &NodeId, status: StatusCode) -> Result<(), StatusCode> {
        let mut c = self.controls.lock();
        let current = self.read(node)?;
        c.bad.insert(node.clone(), (status, current.value.clone()));
        self.write(node, bad_value(current.value, status, DateTime::now()))
    }

    /// Ends a [`set_bad`](Self::set_bad).
    pub fn clear_bad(&self, node: &NodeId) {
        self.controls.lock().bad.remove(node);
    }

    /// Stops updating `node`.
    pub fn freeze(&self, node: &NodeId) {
        self.controls.lock().frozen.insert(node.clone());
    }

    /// Updates `node` again.
    pub fn unfreeze(&self, node: &NodeId) {
        self.controls.lock().frozen.remove(node);
    }

    /// Stops (`true`) or resumes (`false`) updating every node.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// The current value of `node` as the server holds it.
    ///
    /// # Errors
    /// The node does not exist or is not a variable.
    pub fn read(&self, node: &NodeId) -> Result<DataValue, StatusCode> {
        let space = self.manager.address_space().read();
        match space.find(node) {
            Some(opcua::server::address_space::NodeType::Variable(v)) => Ok(v.value(
                opcua::types::TimestampsToReturn::Both,
                &opcua::types::NumericRange::None,
                &opcua::types::DataEncoding::Binary,
                0.0,
            )),
            _ => Err(StatusCode::BadNodeIdUnknown),
        }
    }

    fn write(&self, node: &NodeId, value: DataValue) -> Result<(), StatusCode> {
        self.manager
            .set_value(self.handle.subscriptions(), node, None, value)
    }

    /// Stops the server (clients see the connection close) and waits for it to end.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(u) = self.updater.take() {
            u.abort();
            let _ = u.await;
        }
        self.handle.cancel();
        if let Some(s) = self.server.take() {
            let abort = s.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), s)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for PlcSim {
    fn drop(&mut self) {
        self.handle.cancel();
        if let Some(u) = self.updater.take() {
            u.abort();
        }
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// `value` with Bad `status`, sampled at `now`.
fn bad_value(value: Option<Variant>, status: StatusCode, now: DateTime) -> DataValue {
    DataValue {
        value,
        status: Some(status),
        source_timestamp: Some(now),
        server_timestamp: Some(now),
        ..Default::default()
    }
}

fn populate(manager: &SimpleNodeManager, ns: u16, variables: usize) {
    let space = manager.address_space();
    let mut space = space.write();
    let objects = NodeId::from(ObjectId::ObjectsFolder);
    let press = NodeId::new(ns, "Press");
    space.add_folder(&press, QualifiedName::new(ns, "Press"), "Press", &objects);
    let sim = NodeId::new(ns, "Sim");
    space.add_folder(&sim, QualifiedName::new(ns, "Sim"), "Sim", &objects);
    let read_only = AccessLevel::CURRENT_READ;
    for (name, ty, value) in [
        ("Temperature", DataTypeId::Double, Variant::Double(60.0)),
        ("Pressure", DataTypeId::Double, Variant::Double(0.0)),
        ("Count", DataTypeId::Int64, Variant::Int64(0)),
        ("Running", DataTypeId::Boolean, Variant::Boolean(true)),
        ("Setpoint", DataTypeId::Double, Variant::Double(50.0)),
    ] {
        let mut b = VariableBuilder::new(&press_node(ns, name), QualifiedName::new(ns, name), name)
            .data_type(ty)
            .value(value)
            .organized_by(press.clone());
        b = if name == "Setpoint" {
            b.writable()
        } else {
            b.access_level(read_only).user_access_level(read_only)
        };
        b.insert(&mut *space);
    }
    for i in 0..variables {
        let name = format!("V{i:04}");
        VariableBuilder::new(
            &sim_node(ns, i),
            QualifiedName::new(ns, name.as_str()),
            name.as_str(),
        )
        .data_type(DataTypeId::Double)
        .value(0.0f64)
        .writable()
        .organized_by(sim.clone())
        .insert(&mut *space);
    }
}

async fn update_loop(
    handle: ServerHandle,
    manager: Arc<SimpleNodeManager>,
    ns: u16,
    variables: usize,
    interval: Duration,
    controls: Arc<Mutex<Controls>>,
    paused: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let press: Vec<NodeId> = PRESS_VARIABLES.iter().map(|n| press_node(ns, n)).collect();
    let sims: Vec<NodeId> = (0..variables).map(|i| sim_node(ns, i)).collect();
    let mut n: i64 = 0;
    loop {
        tick.tick().await;
        if paused.load(Ordering::Relaxed) {
            continue;
        }
        n += 1;
        let t = n as f64;
        let now = DateTime::now();
        let dv = |v: Variant| DataValue {
            value: Some(v),
            status: Some(StatusCode::Good),
            source_timestamp: Some(now),
            server_timestamp: Some(now),
            ..Default::default()
        };
        let mut updates: Vec<(&NodeId, DataValue)> = Vec::with_capacity(variables + 3);
        // Held until the values are written, so that a control (set_bad, set_value) never
        // lands between choosing the live nodes and writing them (it would be overwritten).
        let c = controls.lock();
        {
            let live = |id: &NodeId| !c.frozen.contains(id) && !c.bad.contains_key(id);
            if live(&press[0]) {
                updates.push((
                    &press[0],
                    dv(Variant::Double(60.0 + 20.0 * (t / 20.0).sin())),
                ));
            }
            if live(&press[1]) {
                updates.push((&press[1], dv(Variant::Double((t % 100.0).round()))));
            }
            if live(&press[2]) {
                updates.push((&press[2], dv(Variant::Int64(n))));
            }
            for (i, id) in sims.iter().enumerate() {
                if live(id) {
                    let v = (t / 10.0 + i as f64 * 0.1).sin() * 100.0;
                    updates.push((id, dv(Variant::Double(v))));
                }
            }
            // Bad nodes are sampled too: the same value and status (see `PlcSim::set_bad`).
            for (id, (status, value)) in &c.bad {
                updates.push((id, bad_value(value.clone(), *status, now)));
            }
        }
        let _ = manager.set_values(
            handle.subscriptions(),
            updates.into_iter().map(|(id, v)| (id, None, v)),
        );
        drop(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_change_and_the_controls_hold_them() {
        let pki = std::env::temp_dir().join(format!("plc-sim-test-{}", std::process::id()));
        let sim = PlcSim::start(
            PlcSimOptions::new(&pki)
                .variables(3)
                .update_interval(Duration::from_millis(10)),
        )
        .await
        .unwrap();
        assert_eq!(sim.namespace(), 2);
        assert!(
            sim.certificate_der().unwrap().len() > 100,
            "a certificate was made"
        );
        let count = sim.press("Count");
        let first = sim.read(&count).unwrap().value;
        until("Count changes", || sim.read(&count).unwrap().value != first).await;

        sim.set_bad(&count, StatusCode::BadSensorFailure).unwrap();
        let bad = sim.read(&count).unwrap();
        assert_eq!(bad.status, Some(StatusCode::BadSensorFailure));
        let v = sim.sim(1);
        sim.set_value(&v, 42.0).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            sim.read(&v).unwrap().value,
            Some(Variant::Double(42.0)),
            "frozen"
        );
        assert_eq!(
            sim.read(&count).unwrap().status,
            Some(StatusCode::BadSensorFailure)
        );
        assert!(sim.read(&sim.sim(3)).is_err(), "only 3 Sim variables");

        let port = sim.port();
        sim.stop().await;
        let again = PlcSim::start(PlcSimOptions::new(&pki).port(port))
            .await
            .unwrap();
        assert_eq!(again.port(), port, "restarts on the same port");
        again.stop().await;
        let _ = std::fs::remove_dir_all(pki);
    }
}
