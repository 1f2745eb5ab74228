//! Unit tests of the install plans and their rendering.

use super::*;

fn plan(platform: Platform, user: bool) -> InstallPlan {
    InstallPlan {
        platform,
        user,
        binary: PathBuf::from("/opt/point sd/pointsd"),
        config: PathBuf::from("/etc/pointsd/pointsd.toml"),
    }
}

#[test]
fn system_unit_keeps_hardening_and_rewrites_exec_start() {
    let u = plan(Platform::Systemd, false).contents().unwrap();
    assert!(
        u.contains("ExecStart=\"/opt/point sd/pointsd\" run --config /etc/pointsd/pointsd.toml\n")
    );
    for d in [
        "After=network-online.target",
        "User=pointsd",
        "StateDirectory=pointsd",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(u.contains(d), "{d} missing");
    }
    assert_eq!(u.matches("ExecStart=").count(), 1);
}

#[test]
fn user_unit_has_no_user_switch() {
    let u = plan(Platform::Systemd, true).contents().unwrap();
    assert!(!u.contains("User=pointsd"));
    assert!(u.contains("--user"));
    assert!(u.contains("WantedBy=default.target"));
}

#[test]
fn windows_uses_service_run_and_failure_actions() {
    let p = plan(Platform::Windows, false);
    let cmds = p.sc_commands();
    assert_eq!(cmds[0][0], "icacls");
    assert!(cmds[0].contains(&"*S-1-5-18:(OI)(CI)F".to_string()));
    assert!(cmds[1].iter().any(|a| a.contains("service-run --config")));
    assert_eq!(
        cmds[2][1..],
        ["config", "pointsd", "start=", "delayed-auto"]
    );
    assert_eq!(cmds[3][1], "failure");
    assert!(cmds[3].contains(&"restart/5000/restart/5000/restart/5000".to_string()));
    assert_eq!(cmds[4][1..], ["failureflag", "pointsd", "1"]);
    assert!(p.describe().contains("sc.exe failure pointsd"));
}

#[test]
fn plist_is_escaped_and_keeps_alive_on_failure() {
    let p = plan(Platform::Launchd, false).contents().unwrap();
    assert!(p.contains("<string>/opt/point sd/pointsd</string>"));
    assert_eq!(p.matches("<string>run</string>").count(), 1);
    assert!(p.contains("<key>UserName</key>"));
    let u = plan(Platform::Launchd, true).contents().unwrap();
    assert!(!u.contains("<key>UserName</key>") && u.contains("--user"));
    assert!(p.contains("<string>jp.pointsd</string>"));
    assert!(p.contains("<key>SuccessfulExit</key>"));
    assert!(p.contains("/Library/Logs/pointsd/pointsd.err.log"));
}
