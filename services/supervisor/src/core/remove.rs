//! Removing a container: its processes ended, its cgroup, root filesystem, directories and name released, the removal announced.

use super::*;

impl Supervisor {
    pub async fn remove(self: &Arc<Self>, c: &Arc<Container>, force: bool) -> Result<()> {
        let rx = {
            let mut inner = c.inner.lock().await;
            if inner.removed {
                return Ok(());
            }
            if inner.removing {
                return Err(state_err(&inner.rec, "is already being removed"));
            }
            if inner.rec.state.status.is_alive() && !force {
                return Err(state_err(
                    &inner.rec,
                    "is running: stop it first, or force the removal",
                ));
            }
            if let Some(t) = inner.pending_restart.take() {
                t.cancel();
            }
            inner.removing = true;
            if inner.rec.state.status.is_alive() {
                let rx = c.changed.subscribe();
                self.signal(&inner, Signal::SIGKILL)?;
                if inner.rec.state.status == ContainerStatus::Paused {
                    let _ = self.set_frozen(c, &mut inner, false).await;
                }
                Some(rx)
            } else {
                None
            }
        };
        if let Some(mut rx) = rx {
            if tokio::time::timeout(KILL_WAIT, rx.changed()).await.is_err() {
                let mut inner = c.inner.lock().await;
                inner.removing = false;
                return Err(state_err(
                    &inner.rec,
                    format!("still running {KILL_WAIT:?} after SIGKILL"),
                ));
            }
        }
        let mut inner = c.inner.lock().await;
        if let Err(e) = self.end_processes_checked(&c.id).await {
            inner.removing = false;
            return Err(sys_err(&inner.rec, "ending its processes", e));
        }
        if inner.rec.request.rootfs.is_none() {
            // The release sent at the exit of a container removed at its exit finishes on its
            // own: whatever of the root filesystem is still in the container's directory goes
            // with it below, and the layer-store drops a record without its upper dir at its
            // next start.
            let released = if std::mem::take(&mut inner.release_sent) {
                None
            } else {
                self.release_rootfs(&c.id, &c.name).await
            };
            if let Some(e) = released {
                inner.removing = false;
                return Err(e);
            }
        }
        // Out of the way at once (one rename each), deleted later at the lowest priority
        // (`berth_files::janitor`); what is left of them is swept at the next start.
        let run_dir = self.run_dir(&c.id);
        let run_trash = self.ctx.config.run_dir.join(trash_name(&c.id));
        match std::fs::rename(&run_dir, &run_trash) {
            Ok(()) => berth_files::janitor::remove_later([run_trash]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
        }
        let dir = self.dir(&c.id);
        let trash = self.ctx.config.containers_dir().join(trash_name(&c.id));
        match std::fs::rename(&dir, &trash) {
            Ok(()) => berth_files::janitor::remove_later([trash]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                inner.removing = false;
                return Err(SupervisorError::io("remove", &dir, e));
            }
        }
        let key = subjects::actual_key(self.node(), &c.id);
        if let Err(e) = self.ctx.bus.kv_send(&self.kv, &key, None).await {
            tracing::warn!(%e, key, "actual state not deleted");
        }
        {
            let mut t = self.table.lock().unwrap();
            t.by_id.remove(&c.id);
            if t.names.get(&c.name) == Some(&c.id) {
                t.names.remove(&c.name);
            }
        }
        inner.removed = true;
        if !inner.unannounced {
            self.emit(&inner.rec, EV_REMOVED, Map::new(), None).await;
        }
        c.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// End whatever container `id` has left in the kernel: every process of its cgroup
    /// (frozen and killed, so none forks meanwhile) and the cgroup itself, and a shim still
    /// there (which records the exit and goes once its init is killed; SIGKILL after a few
    /// seconds). Returns how many processes the cgroup held.
    pub(super) async fn end_processes_checked(
        &self,
        id: &str,
    ) -> std::result::Result<usize, String> {
        let run_dir = self.run_dir(id);
        let shim = live_shim(&run_dir);
        let cid = id.to_string();
        let n = tokio::task::spawn_blocking(move || {
            let Some(cg) = crate::orphans::cgroup_of(&cid)? else {
                return Ok(0);
            };
            let n = cg
                .kill_all(crate::orphans::KILL_WITHIN)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                // Nothing ran in it (the usual case: the container's processes ended with its
                // init). Its shim's child is removing it; removing a v1 cgroup may wait an RCU
                // grace period, which no reply waits for. Only this directory is removed (by
                // inode): the next instance of the container may take the name meanwhile.
                let ids = cg.identify();
                tokio::task::spawn_blocking(move || {
                    let _ = cg.remove_ended(&ids, crate::orphans::KILL_WITHIN);
                });
                return Ok(0);
            }
            cg.destroy(crate::orphans::KILL_WITHIN)
                .map(|_| n)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        if let Some(shim) = shim {
            if tokio::time::timeout(Duration::from_secs(5), shim.wait())
                .await
                .is_err()
            {
                if let Some(s) = live_shim(&run_dir) {
                    let _ = s.signal(Signal::SIGKILL);
                }
            }
        }
        Ok(n)
    }

    /// [`Supervisor::end_processes_checked`], logging what it did.
    pub(super) async fn end_processes(&self, id: &str) {
        match self.end_processes_checked(id).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(id, n, "killed the processes left in a container's cgroup"),
            Err(e) => {
                tracing::error!(%e, id, "the processes left in a container's cgroup are not all killed")
            }
        }
    }
}
