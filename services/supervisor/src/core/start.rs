//! Starting an instance of a container through the isolator, and watching it (the shim's pidfd, the monitor that turns its end into an exit).

use super::*;

impl Supervisor {
    pub async fn start(self: &Arc<Self>, c: &Arc<Container>) -> Result<ContainerState> {
        let mut inner = c.inner.lock().await;
        if inner.removing || inner.removed {
            return Err(state_err(&inner.rec, "is being removed"));
        }
        if inner.rec.state.status.is_alive() {
            return Ok(inner.rec.state.clone());
        }
        if let Some(t) = inner.pending_restart.take() {
            t.cancel();
        }
        inner.rec.manually_stopped = false;
        inner.rec.backoff_step = 0;
        if let Err(e) = self.start_instance(c, &mut inner, false).await {
            inner.rec.state.error = Some(e.to_string());
            if inner.rec.state.status == ContainerStatus::Restarting {
                inner.rec.state.status = ContainerStatus::Exited;
            }
            let _ = self.commit(c, &inner).await;
            return Err(e);
        }
        Ok(inner.rec.state.clone())
    }

    /// Create the container's process through the isolator, release it, and watch it.
    /// `unsynced`: the record was saved without syncing (a create that also starts): it is
    /// synced while the isolator makes the process, which is released only once it is on disk.
    /// A container removed at its exit has nothing to put on disk first: the isolator releases
    /// it as soon as it is set up, and it may have ended by the time the reply comes.
    pub(super) async fn start_instance(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        unsynced: bool,
    ) -> Result<()> {
        let run_dir = self.run_dir(&c.id);
        // What is left is the previous instance's, whose exit has been processed.
        match std::fs::remove_dir_all(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SupervisorError::io("clear the run directory", &run_dir, e)),
        }
        let at_once = inner.rec.request.auto_remove;
        let synced = (unsynced && !at_once).then(|| self.sync_record(&c.id));
        // Where this instance's output starts: released at once, it may write (and end)
        // before its tailer exists.
        let log_from = crate::logs::log_end(&self.dir(&c.id));
        let reply: iso::CreateReply = self
            .ctx
            .bus
            .ask_local::<berth_proto::isolator::verbs::Create>(
                &iso::CreateRequest {
                    spec: inner.rec.spec.clone(),
                    rootfs: inner.rec.rootfs.clone(),
                    release: at_once,
                },
                &RequestOptions::mutating(CREATE_TIMEOUT),
            )
            .await
            .map_err(peer(&c.name, "creating the container's process"))?;
        if let Some(h) = synced {
            if let Err(e) = h.await.map_err(std::io::Error::other).and_then(|r| r) {
                // The process exists but must not run without its record on disk: it ends
                // before it was released, and its shim with it.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(reply.init_pid as i32),
                    Signal::SIGKILL,
                );
                return Err(SupervisorError::io(
                    "sync the record in",
                    &self.dir(&c.id),
                    e,
                ));
            }
        }
        let shim = PidFd::open(reply.shim_pid).ok();
        inner.init = PidFd::open(reply.init_pid).ok().map(Arc::new);
        inner.gen += 1;
        *c.tailer.lock().await = Some(Tailer::starting_at(
            &self.dir(&c.id),
            logs_subject(self.node(), &c.id),
            (self.settings.log_max_bytes, self.settings.log_max_files),
            c.log_readers.clone(),
            log_from,
        ));
        let st = &mut inner.rec.state;
        st.status = ContainerStatus::Running;
        st.pid = Some(reply.init_pid);
        st.started_at = Some(now_rfc3339());
        st.finished_at = None;
        st.exit_code = None;
        st.oom_killed = false;
        st.error = None;
        st.health = inner.rec.healthcheck.as_ref().map(|_| HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        });
        // Released at once, then saved; the bus hears of it meanwhile. The record synced at
        // create is on disk: a supervisor that dies before this save finds the shim alive
        // (or its exit) and adopts the container as running.
        if !at_once {
            if let Err(e) = iso::release_start(&run_dir) {
                tracing::warn!(%e, id = %c.id, "the container could not be released");
            }
        }
        if at_once {
            // Nothing on disk needs it: recovery adopts a live shim (or processes its exit)
            // whatever state the record was saved in.
            self.refresh_view(c, inner);
        } else if let Err(e) = self.save(c, inner) {
            tracing::error!(%e, id = %c.id, "the running state is not recorded");
        }
        self.watch_instance(c, inner, shim);
        if unsynced {
            // The first instance of a container created and started in one request.
            self.emit(
                &inner.rec,
                EV_CREATED,
                attrs! {"shim_pid" => reply.shim_pid, "init_pid" => reply.init_pid},
                None,
            )
            .await;
        }
        tokio::join!(
            self.publish_state(&inner.rec.state),
            self.emit(
                &inner.rec,
                EV_STARTED,
                attrs! {"pid" => reply.init_pid},
                None,
            )
        );
        Ok(())
    }

    /// Spawn the tasks of a running instance: exit watch, log tail, health checks.
    pub(super) fn watch_instance(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        shim: Option<PidFd>,
    ) {
        let run = self.token.child_token();
        inner.run = Some(run.clone());
        let gen = inner.gen;
        self.tasks.spawn(self.clone().monitor(c.clone(), shim, gen));
        let (sup, c2, run2) = (self.clone(), c.clone(), run.clone());
        self.tasks.spawn(async move {
            let every = Duration::from_millis(sup.settings.log_poll_ms.max(10));
            loop {
                tokio::select! {
                    _ = run2.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Some(t) = c2.tailer.lock().await.as_mut() {
                    t.poll(sup.ctx.bus.client()).await;
                }
            }
        });
        if let Some(hc) = inner.rec.healthcheck.clone() {
            let target = super::exec::Checked {
                sup: self.clone(),
                c: c.clone(),
                gen,
                run: run.clone(),
            };
            self.tasks.spawn(health::checker(target, hc, run));
        }
    }

    pub(super) fn monitor(
        self: Arc<Self>,
        c: Arc<Container>,
        shim: Option<PidFd>,
        gen: u64,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(shim) = shim {
                tokio::select! {
                    _ = self.token.cancelled() => return,
                    r = shim.wait() => if let Err(e) = r {
                        tracing::warn!(%e, id = %c.id, "waiting on the shim failed");
                    },
                }
            }
            let mut inner = c.inner.lock().await;
            if inner.gen != gen || !inner.rec.state.status.is_alive() {
                return;
            }
            let status = read_exit(&self.run_dir(&c.id));
            self.process_exit(&c, &mut inner, status).await;
        })
    }
}
