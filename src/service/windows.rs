//! The Windows service protocol: report Running, turn Stop/Shutdown into the daemon's
//! graceful shutdown, report Stopped when every task has finished.

use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

type Runner = Box<dyn FnOnce(CancellationToken) -> Result<(), crate::daemon::DaemonError> + Send>;
static RUNNER: OnceLock<std::sync::Mutex<Option<Runner>>> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hands control to the SCM; `run` is called with a token that fires on Stop/Shutdown.
pub fn run_as_service(
    run: impl FnOnce(CancellationToken) -> Result<(), crate::daemon::DaemonError> + Send + 'static,
) -> Result<(), windows_service::Error> {
    RUNNER
        .get_or_init(|| std::sync::Mutex::new(None))
        .lock()
        .expect("runner")
        .replace(Box::new(run));
    service_dispatcher::start(super::SERVICE_NAME, ffi_service_main)
}

/// How long the SCM should wait for a graceful stop (the daemon's own bound is the larger of
/// `api.shutdown_grace_s`, default 10 s, and the sync workers' 15 s deadline).
const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

fn status(state: ServiceState, code: u32, checkpoint: u32, hint: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(code),
        checkpoint,
        wait_hint: hint,
        process_id: None,
    }
}

fn service_main(_args: Vec<OsString>) {
    let token = CancellationToken::new();
    let handle_slot: std::sync::Arc<OnceLock<service_control_handler::ServiceStatusHandle>> =
        std::sync::Arc::new(OnceLock::new());
    let (t2, slot2) = (token.clone(), handle_slot.clone());
    let handler = move |event| match event {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            // Tell the SCM a graceful stop is under way and how long it may take, so it
            // does not give up on us while in-flight requests finish.
            if let Some(h) = slot2.get() {
                let _ =
                    h.set_service_status(status(ServiceState::StopPending, 0, 1, STOP_WAIT_HINT));
            }
            t2.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(super::SERVICE_NAME, handler) else {
        return;
    };
    let _ = handle_slot.set(handle);
    let _ = handle.set_service_status(status(ServiceState::Running, 0, 0, Duration::default()));
    let runner = RUNNER.get().and_then(|m| m.lock().expect("runner").take());
    let code = match runner.map(|r| r(token)) {
        Some(Ok(())) => 0,
        _ => 1,
    };
    let _ = handle.set_service_status(status(ServiceState::Stopped, code, 0, Duration::default()));
}
