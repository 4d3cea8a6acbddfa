//! Waiting for a container's end, running a command in it, and the health checks' hook.

use super::*;

impl Supervisor {
    /// Wait until the container is not running and no restart is pending.
    pub async fn wait(&self, c: &Arc<Container>) -> Result<WaitReply> {
        let mut rx = c.changed.subscribe();
        loop {
            {
                let inner = c.inner.lock().await;
                let st = &inner.rec.state;
                let busy = st.status.is_alive() || st.status == ContainerStatus::Restarting;
                if !busy || inner.removed {
                    return Ok(WaitReply {
                        exit_code: st.exit_code.unwrap_or(0),
                        oom_killed: st.oom_killed,
                    });
                }
            }
            tokio::select! {
                _ = self.token.cancelled() => return Err(SupervisorError::invalid("wait", "the supervisor is shutting down")),
                r = rx.changed() => if r.is_err() { return Err(SupervisorError::NotFound(c.id.clone())) },
            }
        }
    }

    pub async fn exec(
        &self,
        c: &Container,
        req: ExecRequest,
        timeout: Duration,
        kill_after: Option<Duration>,
    ) -> Result<iso::ExecReply> {
        {
            let inner = c.inner.lock().await;
            if inner.rec.state.status != ContainerStatus::Running {
                return Err(state_err(
                    &inner.rec,
                    format!("is {}, not running", inner.rec.state.status.as_str()),
                ));
            }
        }
        self.ctx
            .bus
            .ask_local::<berth_proto::isolator::verbs::Exec>(
                &iso::ExecRequest {
                    id: c.id.clone(),
                    args: req.args,
                    env: req.env,
                    user: req.user,
                    working_dir: req.working_dir,
                    stream: req.stream,
                    timeout_ms: kill_after.map(|d| d.as_millis() as u64),
                },
                // With `kill_after`, the isolator's reply follows the kill shortly.
                &RequestOptions::timeout(timeout + Duration::from_secs(5)),
            )
            .await
            .map_err(peer(&c.name, "exec"))
    }

    /// Record a health transition (called by the checker with the container locked).
    pub(crate) async fn health_changed(&self, c: &Container, inner: &Inner) {
        if let Err(e) = self.commit(c, inner).await {
            tracing::warn!(%e, "health not recorded");
        }
        if let Some(h) = &inner.rec.state.health {
            self.emit(
                &inner.rec,
                EV_HEALTH,
                attrs! {"health" => h.status.as_str()},
                None,
            )
            .await;
        }
    }

    /// Refresh the view only (a probe that changed nothing but the probe log).
    pub(crate) fn refresh_view(&self, c: &Container, inner: &Inner) {
        *c.view.lock().unwrap() = inner.rec.clone();
    }
}
