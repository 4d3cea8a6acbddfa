//! Named volumes: `<data_root>/volumes/<name>/`, created by `create` on first use, kept until
//! `volume-remove`.

use crate::error::{io, IsolatorError};
use berth_bus::NodeConfig;
use berth_proto::isolator::*;

/// Ids of containers whose spec mounts volume `name` and whose shim is still running.
fn users(cfg: &NodeConfig, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(cfg.containers_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let Ok(b) = std::fs::read(e.path().join(SPEC_FILE)) else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<ContainerSpec>(&b) else {
            continue;
        };
        let uses = spec
            .mounts
            .iter()
            .any(|m| m.kind == MountKind::Volume && m.source == name);
        if uses && crate::is_live(&cfg.container_run_dir(&id)) {
            out.push(id);
        }
    }
    out.sort();
    out
}

pub fn list(cfg: &NodeConfig) -> Result<VolumesReply, IsolatorError> {
    let dir = cfg.volumes_dir();
    let mut volumes = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(io("read", &dir))?;
                if !e.path().is_dir() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                volumes.push(VolumeInfo {
                    used_by: users(cfg, &name),
                    path: e.path().display().to_string(),
                    name,
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", &dir)(e)),
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(VolumesReply { volumes })
}

pub fn remove(
    cfg: &NodeConfig,
    req: &VolumeRemoveRequest,
) -> Result<VolumeRemoveReply, IsolatorError> {
    crate::validate::volume_name(&req.name)?;
    let d = cfg.volumes_dir().join(&req.name);
    if !d.is_dir() {
        return Err(IsolatorError::NotFound(format!("no volume {:?}", req.name)));
    }
    let used = users(cfg, &req.name);
    if !used.is_empty() && !req.force {
        return Err(IsolatorError::Precondition(format!(
            "volume {:?} is in use by running container(s) {}",
            req.name,
            used.join(", ")
        )));
    }
    std::fs::remove_dir_all(&d).map_err(io("remove", &d))?;
    Ok(VolumeRemoveReply {
        name: req.name.clone(),
    })
}
