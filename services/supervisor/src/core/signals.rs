//! Signals to a running container: stop (with its grace period), kill, restart, pause and unpause.

use super::*;

impl Supervisor {
    /// Signal the init. Without a pidfd the init had ended already when the supervisor
    /// looked (its exit is on the way): nothing to signal.
    pub(super) fn signal(&self, inner: &Inner, sig: Signal) -> Result<()> {
        let Some(init) = &inner.init else {
            return Ok(());
        };
        init.signal(sig)
            .map_err(|e| sys_err(&inner.rec, &format!("sending {sig}"), e))
    }

    /// Stop: the stop signal, then SIGKILL after the grace period. `manual` keeps the restart
    /// policy from starting it again.
    pub async fn stop(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout_ms: Option<u64>,
        manual: bool,
    ) -> Result<ContainerState> {
        let (mut rx, grace) = {
            let mut inner = c.inner.lock().await;
            if manual && !inner.rec.manually_stopped {
                inner.rec.manually_stopped = true;
                self.commit(c, &inner).await?;
            }
            match inner.rec.state.status {
                ContainerStatus::Restarting => {
                    if let Some(t) = inner.pending_restart.take() {
                        t.cancel();
                    }
                    inner.rec.state.status = ContainerStatus::Exited;
                    self.commit(c, &inner).await?;
                    c.changed.send_modify(|g| *g += 1);
                    return Ok(inner.rec.state.clone());
                }
                s if !s.is_alive() => return Ok(inner.rec.state.clone()),
                _ => {}
            }
            let rx = c.changed.subscribe();
            let sig = parse_signal(&inner.rec.stop_signal).unwrap_or(Signal::SIGTERM);
            self.deliver(c, &mut inner, sig).await?;
            (
                rx,
                Duration::from_millis(timeout_ms.unwrap_or(inner.rec.stop_grace_period_ms)),
            )
        };
        if tokio::time::timeout(grace, rx.changed()).await.is_err() {
            {
                let inner = c.inner.lock().await;
                if inner.rec.state.status.is_alive() {
                    self.signal(&inner, Signal::SIGKILL)?;
                    self.emit(&inner.rec, EV_KILLED, attrs! {"signal" => "SIGKILL"}, None)
                        .await;
                }
            }
            if tokio::time::timeout(KILL_WAIT, rx.changed()).await.is_err() {
                let inner = c.inner.lock().await;
                if inner.rec.state.status.is_alive() {
                    return Err(state_err(
                        &inner.rec,
                        format!("still running {KILL_WAIT:?} after SIGKILL"),
                    ));
                }
            }
        }
        Ok(Self::view(c).state)
    }

    pub async fn kill(self: &Arc<Self>, c: &Arc<Container>, signal: Option<&str>) -> Result<()> {
        let sig = match signal {
            Some(s) => parse_signal(s).map_err(|e| SupervisorError::invalid("signal", e))?,
            None => Signal::SIGKILL,
        };
        let mut inner = c.inner.lock().await;
        if !inner.rec.state.status.is_alive() {
            return Err(state_err(&inner.rec, "is not running"));
        }
        let paused = inner.rec.state.status == ContainerStatus::Paused;
        if paused && sig != Signal::SIGKILL {
            return Err(state_err(&inner.rec, "is paused: unpause it first"));
        }
        self.deliver(c, &mut inner, sig).await?;
        Ok(())
    }

    /// Send `sig` to the init, thaw a paused container so the signal is acted on, and
    /// announce it (`killed`).
    pub(super) async fn deliver(
        &self,
        c: &Container,
        inner: &mut Inner,
        sig: Signal,
    ) -> Result<()> {
        self.signal(inner, sig)?;
        if inner.rec.state.status == ContainerStatus::Paused {
            self.set_frozen(c, inner, false).await?;
        }
        self.emit(
            &inner.rec,
            EV_KILLED,
            attrs! {"signal" => sig.as_str()},
            None,
        )
        .await;
        Ok(())
    }

    pub async fn restart(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout_ms: Option<u64>,
    ) -> Result<ContainerState> {
        self.stop(c, timeout_ms, true).await?;
        self.start(c).await
    }

    /// Stop then start, counted as a restart (the health action `restart`).
    pub(crate) async fn restart_counted(self: &Arc<Self>, c: &Arc<Container>) -> Result<()> {
        self.stop(c, None, true).await?;
        {
            let mut inner = c.inner.lock().await;
            inner.rec.state.restart_count += 1;
        }
        self.start(c).await.map(|_| ())
    }

    pub(super) async fn set_frozen(
        &self,
        c: &Container,
        inner: &mut Inner,
        frozen: bool,
    ) -> Result<()> {
        let pid = inner
            .rec
            .state
            .pid
            .ok_or_else(|| state_err(&inner.rec, "has no process"))?;
        let cg = cgroup::of_pid(pid).map_err(|e| sys_err(&inner.rec, "finding its cgroup", e))?;
        cg.freeze(frozen)
            .await
            .map_err(|e| sys_err(&inner.rec, if frozen { "freezing" } else { "thawing" }, e))?;
        inner.rec.state.status = if frozen {
            ContainerStatus::Paused
        } else {
            ContainerStatus::Running
        };
        self.commit(c, inner).await?;
        let action = if frozen { EV_PAUSED } else { EV_UNPAUSED };
        self.emit(&inner.rec, action, Map::new(), None).await;
        Ok(())
    }

    pub async fn pause(&self, c: &Container, frozen: bool) -> Result<ContainerState> {
        let mut inner = c.inner.lock().await;
        let want = if frozen {
            ContainerStatus::Running
        } else {
            ContainerStatus::Paused
        };
        if inner.rec.state.status != want {
            return Err(state_err(
                &inner.rec,
                format!(
                    "is {}, not {}",
                    inner.rec.state.status.as_str(),
                    want.as_str()
                ),
            ));
        }
        self.set_frozen(c, &mut inner, frozen).await?;
        Ok(inner.rec.state.clone())
    }
}
