//! Recovery at start: records read back from disk, running instances re-adopted through their shims, exits during the downtime announced once, orphans swept, and interrupted removals finished.

use super::*;

impl Supervisor {
    /// Rebuild every container from its record and the run directory: re-adopt running shims,
    /// process exits that happened while the supervisor was away, resume pending restarts.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        // Run directories of removals the supervisor did not finish.
        if let Ok(run) = std::fs::read_dir(&self.ctx.config.run_dir) {
            berth_files::janitor::remove_later(
                run.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(TRASH_PREFIX))
                    .map(|e| e.path()),
            );
        }
        let root = self.ctx.config.containers_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SupervisorError::io("list", &root, e)),
        };
        let mut known = std::collections::HashSet::new();
        let mut orphans = Vec::new();
        for ent in entries.flatten() {
            let dir = ent.path();
            if ent.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
                // A removal the supervisor did not finish.
                berth_files::janitor::remove_later([dir]);
                continue;
            }
            if !crate::record::exists(&dir) {
                orphans.push(ent.file_name().to_string_lossy().into_owned());
                continue;
            }
            known.insert(ent.file_name().to_string_lossy().into_owned());
            let rec = match Record::load(&dir) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%e, "container record unreadable: left alone");
                    continue;
                }
            };
            known.insert(rec.state.id.clone());
            let c = self.insert(rec);
            if let Err(e) = self.recover_one(&c).await {
                tracing::error!(%e, id = %c.id, "recovery failed");
            }
        }
        if !orphans.is_empty() {
            self.tasks.spawn(self.clone().sweep_orphans(orphans));
        }
        // Cgroups of this node's containers that no record names (removed while their
        // processes still ran): emptied and removed before any create can make a new one.
        let dir = self.ctx.config.containers_dir();
        let known2 = known.clone();
        let swept = tokio::task::spawn_blocking(move || crate::orphans::sweep(&dir, &known2))
            .await
            .unwrap_or_default();
        for (id, r) in swept {
            match r {
                Ok(n) => tracing::warn!(id, n, "killed the processes of a cgroup of this node without a container record, and removed it"),
                Err(e) => tracing::error!(%e, id, "a cgroup of this node without a container record is not emptied"),
            }
        }
        // Drop actual-state keys of containers that are gone.
        let prefix = format!("{}.", self.node());
        if let Ok(mut keys) = self.kv.keys().await {
            use futures::StreamExt;
            let mut stale = Vec::new();
            while let Some(Ok(k)) = keys.next().await {
                if let Some(id) = k.strip_prefix(&prefix) {
                    if !known.contains(id) {
                        stale.push(k.clone());
                    }
                }
            }
            for k in stale {
                let _ = self.kv.delete(&k).await;
            }
        }
        Ok(())
    }

    /// Container directories without a record: a container removed at its exit whose record
    /// never reached the disk (a power loss), or a create cut short between preparing the
    /// root filesystem and saving the record. Each is released by the layer-store (waited for
    /// up to a minute while it is not there yet) and removed; one whose release fails is left
    /// for the next start.
    pub(super) async fn sweep_orphans(self: Arc<Self>, names: Vec<String>) {
        for id in names {
            if !is_container_id(&id) {
                continue;
            }
            let released = self
                .retrying(
                    || self.ask_release(&id),
                    |e| matches!(e, BusError::NoResponders { .. }),
                )
                .await;
            match released {
                None => return,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(%e, id, "a container directory without a record is left: its root filesystem was not released");
                    continue;
                }
            }
            let dir = self.dir(&id);
            // The layer-store removes the directory once its own part is gone, if nothing else
            // is left in it.
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(%e, dir = %dir.display(), "orphan not removed")
                }
                _ => tracing::info!(id, "removed a container directory without a record"),
            }
        }
    }

    /// Remove a container removed at its exit whose removal a supervisor's death cut short,
    /// retried for up to a minute while the layer-store is not there yet.
    pub(super) async fn finish_removal(self: Arc<Self>, c: &Arc<Container>) {
        if let Some(Err(e)) = self.retrying(|| self.remove(c, true), |_| true).await {
            tracing::warn!(%e, id = %c.id, "a container removed at its exit is left");
        }
    }

    /// `attempt`, again every 200 ms for up to a minute while `again` says its error may pass
    /// (a service not there yet after a start); `None` when the supervisor stops meanwhile.
    pub(super) async fn retrying<T, E, Fut>(
        &self,
        mut attempt: impl FnMut() -> Fut,
        again: impl Fn(&E) -> bool,
    ) -> Option<std::result::Result<T, E>>
    where
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        const EVERY: Duration = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        loop {
            match attempt().await {
                Err(e) if again(&e) && waited < Duration::from_secs(60) => {}
                r => return Some(r),
            }
            tokio::select! {
                _ = self.token.cancelled() => return None,
                _ = tokio::time::sleep(EVERY) => {}
            }
            waited += EVERY;
        }
    }

    pub(super) async fn recover_one(self: &Arc<Self>, c: &Arc<Container>) -> Result<()> {
        let mut inner = c.inner.lock().await;
        let run_dir = self.run_dir(&c.id);
        let shim = live_shim(&run_dir);
        if never_announced(&inner.rec) {
            // Created and started in one request that did not finish (berthd stopped during
            // it): unless its process was released (the create then happened, only its reply
            // was lost), nothing of it stays: process, cgroup, files, record. (A container
            // removed at its exit keeps the record of its create: with neither a shim nor an
            // exit it has ended, and its removal is finished below.)
            let waiting = shim.is_some() && iso::waiting_for_start(&run_dir);
            let nothing = shim.is_none() && read_exit(&run_dir).is_none();
            if waiting || (nothing && !inner.rec.request.auto_remove) {
                tracing::warn!(id = %c.id, name = %c.name, "removing a container whose create was cut short");
                inner.unannounced = true;
                drop(inner);
                drop(shim);
                let (sup, c) = (self.clone(), c.clone());
                self.tasks
                    .spawn(async move { sup.finish_removal(&c).await });
                return Ok(());
            }
        }
        if shim.is_none() {
            // Nothing may run in the cgroup of a container whose shim is gone.
            self.end_processes(&c.id).await;
        }
        if let Some(shim) = shim {
            // Running (or created and never released: release it now).
            let init_pid = read_pid(&run_dir.join(iso::INIT_PID_FILE)).or(inner.rec.state.pid);
            inner.init = init_pid.and_then(|p| PidFd::open(p).ok()).map(Arc::new);
            inner.gen += 1;
            if !inner.rec.state.status.is_alive() {
                inner.rec.state.status = ContainerStatus::Running;
                inner.rec.state.started_at = Some(now_rfc3339());
                inner.rec.state.finished_at = None;
                inner.rec.state.exit_code = None;
            }
            inner.rec.state.pid = init_pid;
            if let Err(e) = iso::release_start(&run_dir) {
                tracing::warn!(%e, id = %c.id, "the container could not be released");
            }
            *c.tailer.lock().await = Some(Tailer::new(
                &self.dir(&c.id),
                logs_subject(self.node(), &c.id),
                (self.settings.log_max_bytes, self.settings.log_max_files),
                c.log_readers.clone(),
            ));
            if inner.rec.healthcheck.is_some() && inner.rec.state.health.is_none() {
                inner.rec.state.health = Some(HealthState {
                    status: HealthStatus::Starting,
                    failing_streak: 0,
                    log: Vec::new(),
                });
            }
            self.commit(c, &inner).await?;
            self.watch_instance(c, &mut inner, Some(shim));
            tracing::info!(id = %c.id, name = %c.name, "re-adopted a running container");
            return Ok(());
        }
        let exit = read_exit(&run_dir);
        let fresh_exit = exit
            .as_ref()
            .is_some_and(|e| inner.rec.state.finished_at.as_deref() != Some(&e.finished_at));
        if fresh_exit {
            // It ended while the supervisor was away.
            inner.rec.state.status = ContainerStatus::Running;
            self.process_exit(c, &mut inner, exit).await;
            return Ok(());
        }
        match inner.rec.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => {
                self.process_exit(c, &mut inner, None).await;
            }
            ContainerStatus::Restarting => {
                let delay = self
                    .settings
                    .backoff(inner.rec.backoff_step.saturating_sub(1));
                self.publish_state(&inner.rec.state).await;
                self.schedule_restart(c, &mut inner, delay).await;
            }
            _ if inner.rec.request.auto_remove && inner.rec.request.start => {
                // Removed at its exit, and it has ended (its exit processed, or lost with the
                // run directory at a reboot) or never got a process: finish the removal. Its
                // record is the one saved at the create; `remove` takes its run directory.
                drop(inner);
                let (sup, c) = (self.clone(), c.clone());
                self.tasks
                    .spawn(async move { sup.finish_removal(&c).await });
            }
            _ => {
                if !inner.rec.exit_reported {
                    self.announce_exit(c, &mut inner).await;
                }
                let _ = std::fs::remove_dir_all(&run_dir);
                self.publish_state(&inner.rec.state).await;
            }
        }
        Ok(())
    }

    pub(crate) fn dir_of(&self, id: &str) -> PathBuf {
        self.dir(id)
    }
}
