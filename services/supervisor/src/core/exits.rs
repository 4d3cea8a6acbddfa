//! A container's exit: recorded, announced once, and the restart policy applied (the decision itself is `crate::restart`), with the delayed restart.

use super::*;

impl Supervisor {
    /// Record an exit (or a lost one: `None`), announce it once, and apply the restart policy.
    pub(super) async fn process_exit(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        status: Option<ExitStatus>,
    ) {
        if let Some(t) = inner.run.take() {
            t.cancel();
        }
        inner.init = None;
        if let Some(t) = c.tailer.lock().await.as_mut() {
            t.poll(self.ctx.bus.client()).await;
        }
        let lost = status.is_none();
        if lost {
            // The shim is gone without recording the exit: what it started may still run,
            // re-parented away. Nothing of a container given up on keeps running.
            self.end_processes(&c.id).await;
        }
        let (code, oom, finished) = match &status {
            Some(s) => (s.exit_code, s.oom_killed, s.finished_at.clone()),
            None => (255, false, now_rfc3339()),
        };
        let rec = &mut inner.rec;
        let decision = crate::restart::decide(
            &crate::restart::Exit {
                policy: &rec.request.restart,
                exit_code: code,
                ran: crate::restart::run_length(rec.state.started_at.as_deref(), &finished),
                restart_count: rec.state.restart_count,
                backoff_step: rec.backoff_step,
                manually_stopped: rec.manually_stopped,
                removing: inner.removing,
            },
            &self.settings,
        );
        let restart = decision.restart;
        rec.backoff_step = decision.backoff_step;
        if !restart
            && rec.request.auto_remove
            && rec.request.rootfs.is_none()
            && !inner.release_sent
        {
            inner.release_sent = true;
            let (sup, id, name) = (self.clone(), c.id.clone(), c.name.clone());
            self.tasks
                .spawn(async move { sup.release_rootfs(&id, &name).await });
        }
        let rec = &mut inner.rec;
        rec.state.pid = None;
        rec.state.exit_code = Some(code);
        rec.state.oom_killed = oom;
        rec.state.finished_at = Some(finished.clone());
        if lost {
            rec.state.error = Some("the shim ended without recording the exit status".into());
        }
        rec.state.status = if restart {
            ContainerStatus::Restarting
        } else if lost {
            ContainerStatus::Dead
        } else {
            ContainerStatus::Exited
        };
        rec.exit_reported = false;
        let delay = decision.delay;
        // A container removed at its exit goes now: its record stays as it was saved at the
        // create (recovery finishes the removal), and its followers hear of the exit once it
        // is removed, in one message.
        let remove_now = !restart && inner.rec.request.auto_remove && !inner.removing;
        if remove_now {
            self.refresh_view(c, inner);
            self.publish_state(&inner.rec.state).await;
        } else if let Err(e) = self.commit(c, inner).await {
            tracing::error!(%e, "exit not recorded");
        }
        let exited = move |removed| LogMessage::Exited {
            exit_code: code,
            oom_killed: oom,
            restarting: restart,
            removed,
        };
        if !remove_now {
            self.publish_log(&c.id, &exited(false)).await;
        }
        *c.tailer.lock().await = None;
        self.announce_exit(c, inner).await;
        if !remove_now {
            // (The removal takes it out of the way.)
            let _ = std::fs::remove_dir_all(self.run_dir(&c.id));
        }
        c.changed.send_modify(|g| *g += 1);
        if restart {
            self.schedule_restart(c, inner, delay).await;
        } else if remove_now {
            let (sup, c2) = (self.clone(), c.clone());
            self.tasks.spawn(async move {
                let removed = sup.remove(&c2, false).await;
                if let Err(e) = &removed {
                    tracing::warn!(%e, "automatic removal failed");
                }
                sup.publish_log(&c2.id, &exited(removed.is_ok())).await;
            });
        }
    }

    /// Publish the `exited` event of the exit in the record (once: its id is derived from the
    /// exit), then mark it announced.
    pub(super) async fn announce_exit(&self, c: &Container, inner: &mut Inner) {
        let rec = &inner.rec;
        let at = rec.state.finished_at.clone().unwrap_or_default();
        let mut a = attrs! {
            "exit_code" => rec.state.exit_code,
            "oom_killed" => rec.state.oom_killed,
            "restart_count" => rec.state.restart_count,
        };
        if let Some(e) = &rec.state.error {
            a.insert("error".into(), Value::String(e.clone()));
        }
        self.emit(rec, EV_EXITED, a, Some(event_id(&c.id, EV_EXITED, &at)))
            .await;
        if rec.state.oom_killed {
            self.emit(rec, "oom", Map::new(), Some(event_id(&c.id, "oom", &at)))
                .await;
        }
        inner.rec.exit_reported = true;
        if inner.rec.request.auto_remove {
            // Its removal follows, and the record on disk stays as the create saved it: an
            // announcement made again after a supervisor's death has the same id, and the
            // events stream drops it as a duplicate.
            self.refresh_view(c, inner);
            return;
        }
        let dir = self.dir(&c.id);
        if let Err(e) = inner.rec.save(&dir, false) {
            tracing::warn!(%e, dir = %dir.display(), "record not saved");
        }
    }

    pub(super) async fn schedule_restart(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        delay: Duration,
    ) {
        let tok = self.token.child_token();
        inner.pending_restart = Some(tok.clone());
        self.emit(
            &inner.rec,
            EV_RESTARTING,
            attrs! {"restart_count" => inner.rec.state.restart_count + 1, "delay_ms" => delay.as_millis() as u64},
            None,
        )
        .await;
        self.tasks
            .spawn(self.clone().delayed_restart(c.clone(), tok, delay));
    }

    pub(super) fn delayed_restart(
        self: Arc<Self>,
        c: Arc<Container>,
        tok: CancellationToken,
        delay: Duration,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = tok.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let mut inner = c.inner.lock().await;
            if tok.is_cancelled()
                || inner.removing
                || inner.rec.state.status != ContainerStatus::Restarting
            {
                return;
            }
            inner.pending_restart = None;
            inner.rec.state.restart_count += 1;
            if let Err(e) = self.start_instance(&c, &mut inner, false).await {
                tracing::warn!(%e, id = %c.id, "restart failed");
                // A failed start counts as a failed run: the policy decides again.
                inner.rec.state.status = ContainerStatus::Running;
                let status = ExitStatus {
                    exit_code: 255,
                    signal: None,
                    oom_killed: false,
                    finished_at: now_rfc3339(),
                };
                self.process_exit(&c, &mut inner, Some(status)).await;
                inner.rec.state.error = Some(e.to_string());
                let _ = self.commit(&c, &inner).await;
            }
        })
    }
}
