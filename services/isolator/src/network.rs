//! The isolator's side of bridge networks (crate `berth-net`, docs/network.md): the
//! isolator's [`berth_net::Net`] ([`Isolator::net`]), restored when the service starts
//! (bridges, rules, DNS servers, published ports of live containers), swept every few seconds
//! (the endpoints and ports of containers that have ended are released), the network verbs,
//! and `attach` during `create`.

use crate::error::IsolatorError;
use crate::Isolator;
use berth_bus::{Router, ServiceContext};
use berth_net::{AttachRequest, Attachment};
use berth_proto::isolator::{ContainerSpec, NetworkMode, HOSTS_FILE, RESOLV_FILE};
use berth_proto::network::*;
use berth_proto::BerthError;
use std::path::Path;
use std::time::Duration;

/// How often the endpoints of ended containers are released.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Restore the node's networks and release, every [`SWEEP_EVERY`], what ended containers
/// held; stops with the service.
pub async fn start(iso: &Isolator, ctx: &ServiceContext) {
    let n = iso.net();
    if let Err(e) = n.restore().await {
        tracing::error!("restore networks: {e}");
    }
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(SWEEP_EVERY) => {
                    if let Err(e) = n.sweep().await {
                        tracing::warn!("sweep networks: {e}");
                    }
                }
            }
        }
    });
}

/// Attach a freshly created container (its init blocked before `exec`) to its bridge
/// network and rewrite its `/etc/resolv.conf` and `/etc/hosts` (in place: they are bind
/// mounts) for it. Blocking: called from `create`'s blocking task.
pub fn attach(
    iso: &Isolator,
    spec: &ContainerSpec,
    hostname: &str,
    init_pid: u32,
    bundle: &Path,
) -> Result<Option<Attachment>, IsolatorError> {
    let NetworkMode::Bridge(network) = &spec.network else {
        return Ok(None);
    };
    let n = iso.net();
    let req = AttachRequest {
        network: network.clone(),
        container_id: spec.id.clone(),
        container_name: spec.name.clone(),
        aliases: spec.aliases.clone(),
        pid: init_pid,
        ports: spec.ports.clone(),
    };
    let rt = tokio::runtime::Handle::current();
    if network == DEFAULT_NETWORK {
        // The node's default network, as Docker's `bridge`: made on first use.
        rt.block_on(n.ensure(DEFAULT_NETWORK))?;
    }
    let a = rt.block_on(n.attach(&req))?;
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = (|| {
        let resolv = bundle.join(RESOLV_FILE);
        std::fs::write(&resolv, berth_net::resolv_conf(a.gateway, &host))
            .map_err(crate::error::io("write", &resolv))?;
        let hosts = bundle.join(HOSTS_FILE);
        let mut h = std::fs::read_to_string(&hosts).map_err(crate::error::io("read", &hosts))?;
        h.push_str(&berth_net::hosts_entries(
            a.address,
            hostname,
            &spec.name,
            &spec.aliases,
        ));
        std::fs::write(&hosts, h).map_err(crate::error::io("write", &hosts))
    })();
    if let Err(e) = files {
        let _ = rt.block_on(n.detach(network, &spec.id));
        return Err(e);
    }
    tracing::info!(id = spec.id, network, address = %a.address, "container attached");
    Ok(Some(a))
}

fn err(e: berth_net::NetError) -> BerthError {
    e.into()
}

/// The network verbs: `network-create`, `network-remove`, `networks`, `network-inspect`,
/// `ports`.
pub fn routes(router: Router, iso: &Isolator) -> Router {
    let n = iso.net();
    let (c1, c2, c3, c4, c5) = (n.clone(), n.clone(), n.clone(), n.clone(), n);
    router
        .verb::<berth_proto::isolator::verbs::NetworkCreate, _, _>(
            move |req: NetworkCreateRequest| {
                let n = c1.clone();
                async move {
                    n.create(&req.name, req.subnet.as_deref())
                        .await
                        .map_err(err)
                }
            },
        )
        .verb::<berth_proto::isolator::verbs::NetworkRemove, _, _>(
            move |req: NetworkRemoveRequest| {
                let n = c2.clone();
                async move {
                    n.remove(&req.name).await.map_err(err)?;
                    Ok::<_, BerthError>(NetworkRemoveReply { name: req.name })
                }
            },
        )
        .verb::<berth_proto::isolator::verbs::Networks, _, _>(move |_: NetworksRequest| {
            let n = c3.clone();
            async move {
                Ok::<_, BerthError>(NetworksReply {
                    networks: n.list().map_err(err)?,
                })
            }
        })
        .verb::<berth_proto::isolator::verbs::NetworkInspect, _, _>(
            move |req: NetworkInspectRequest| {
                let n = c4.clone();
                async move { n.inspect(&req.name).map_err(err) }
            },
        )
        .verb::<berth_proto::isolator::verbs::Ports, _, _>(move |req: PortsRequest| {
            let n = c5.clone();
            async move {
                match n.ports(&req.container).map_err(err)? {
                    Some(ports) => Ok(PortsReply { ports }),
                    None => Err(BerthError::not_found(format!(
                        "container {} is not attached to any network",
                        req.container
                    ))),
                }
            }
        })
}
