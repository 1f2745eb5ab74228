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

/// Makes `dir` (created if missing) private whatever the umask: no access for others, and
/// none for its group unless that group is the service's own (`pointsd`, as the packages
/// install the data and log dirs: 0750 root:pointsd). Outside the packages that is 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    restrict(dir, 0o700)?;
    Ok(())
}

/// Creates `file` owner-only (0600) if it is missing, from its creation on; an existing one
/// loses what others (and a group other than `pointsd`) could do with it.
pub fn private_file(file: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    drop(opts.open(file)?);
    #[cfg(unix)]
    restrict(file, 0o600)?;
    Ok(())
}

/// Clears the bits of `path` beyond `owner_only` (0700 or 0600), keeping the group's read
/// (and search) bits when the group is `pointsd`.
#[cfg(unix)]
fn restrict(path: &Path, owner_only: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    let own_group = group_id("pointsd").is_some_and(|gid| gid == meta.gid());
    let allowed = if own_group {
        owner_only | ((owner_only >> 3) & 0o050)
    } else {
        owner_only
    };
    let next = mode & allowed;
    if next != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(next))?;
    }
    Ok(())
}
