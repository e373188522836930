//! A real Redis Cluster on loopback: three primaries, each with the module loaded, joined with
//! `redis-cli --cluster create`.

use std::time::Duration;

use crate::{free_port, wait_until, Kind, Server};

/// Three primaries covering all 16384 slots. The nodes are killed on drop.
pub struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// Starts three nodes of `kind` and joins them into one cluster with no replicas.
    ///
    /// # Panics
    ///
    /// When a node does not start, `redis-cli --cluster create` fails, or the cluster does not
    /// reach `cluster_state:ok` within 20 seconds.
    pub fn start(kind: Kind) -> Self {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                // The bus port defaults to port + 10000, which can exceed 65535 for the
                // ephemeral ports tests get: choose it explicitly. A port found free can be
                // taken (by a parallel test's server, or as the local port of a connection)
                // before the node binds it, and the node then exits: try again with another.
                let mut last_err = String::new();
                for _ in 0..5 {
                    let bus = free_port().to_string();
                    match Server::try_start_with(
                        kind,
                        &[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "3000",
                            "--cluster-port",
                            &bus,
                        ],
                    ) {
                        Ok(node) => return node,
                        Err(e) => last_err = e,
                    }
                }
                panic!("a cluster node did not start: {last_err}")
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and knows all three primaries.
    pub fn wait_ok(&self) {
        wait_until(Duration::from_secs(20), || {
            self.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.conn())
                    .unwrap_or_default();
                crate::info_field(&info, "cluster_state").as_deref() == Some("ok")
                    && crate::info_field(&info, "cluster_known_nodes").as_deref() == Some("3")
            })
        })
        .unwrap_or_else(|_| panic!("cluster never reached cluster_state:ok"));
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// `redis://` URLs of every node, as cluster clients take them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// The node that serves `key`'s slot now.
    pub fn node_for(&self, key: &str) -> &Server {
        let slot = self.slot(key);
        self.nodes
            .iter()
            .find(|n| self.node_id_for_slot(n, slot).as_deref() == Some(&n.node_id()))
            .expect("a node serves the slot")
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].conn())
            .expect("KEYSLOT")
    }

    fn node_id_for_slot(&self, asked: &Server, slot: i64) -> Option<String> {
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut asked.conn())
            .ok()?;
        let redis::Value::Array(ranges) = slots else {
            return None;
        };
        ranges.iter().find_map(|r| {
            let redis::Value::Array(r) = r else {
                return None;
            };
            let (
                Some(redis::Value::Int(lo)),
                Some(redis::Value::Int(hi)),
                Some(redis::Value::Array(owner)),
            ) = (r.first(), r.get(1), r.get(2))
            else {
                return None;
            };
            if !(*lo..=*hi).contains(&slot) {
                return None;
            }
            match owner.get(2) {
                Some(redis::Value::BulkString(id)) => {
                    Some(String::from_utf8_lossy(id).into_owned())
                }
                _ => None,
            }
        })
    }

    /// Moves `slot` with all its keys from `from` to `to`, the way `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, `MIGRATE` of every key (which carries locks as
    /// their DUMP payload), then `SETSLOT … NODE` on every node.
    pub fn migrate_slot(&self, slot: i64, from: &Server, to: &Server) {
        let (from_id, to_id) = (from.node_id(), to.node_id());
        let setslot = |node: &Server, how: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .query::<()>(&mut node.conn())
                .unwrap_or_else(|e| panic!("SETSLOT {slot} {how}: {e}"));
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut from.conn())
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut from.conn())
                .expect("MIGRATE");
        }
        for node in &self.nodes {
            setslot(node, "NODE", &to_id);
        }
    }
}

impl Server {
    /// This node's cluster id.
    pub fn node_id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn())
            .expect("CLUSTER MYID")
    }
}
