//! File permissions: a config file holding secrets must not be readable by others.

use std::path::Path;

use super::load::Problem;
use super::sections::Config;

/// Permission problems of a config file that holds secrets (Unix only).
pub fn file_mode_warnings(path: &Path, cfg: &Config) -> Vec<Problem> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if cfg.holds_secret()
            && let Ok(meta) = std::fs::metadata(path)
        {
            let mode = meta.permissions().mode() & 0o777;
            // Group access is fine only for the service's own group (the packages install
            // the file as root:pointsd 0640); any other group is too wide for secrets.
            let own_group = group_id("pointsd").is_some_and(|gid| gid == meta.gid());
            let who = if mode & 0o007 != 0 {
                Some("others")
            } else if mode & 0o070 != 0 && !own_group {
                Some("its group")
            } else {
                None
            };
            if let Some(who) = who {
                return vec![Problem {
                    key: "(file)".into(),
                    message: format!(
                        "{} holds secrets and is readable by {who} (mode {mode:03o}); run `chmod 600 {}` (or 640 with group pointsd)",
                        path.display(),
                        path.display()
                    ),
                }];
            }
        }
    }
    let _ = (path, cfg);
    Vec::new()
}

/// A group's id from `/etc/group`, without calling into libc.
#[cfg(unix)]
pub(crate) fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}
