//! HTTPS for the store LAN (`[api.tls]`): the operator's certificate and key, or a
//! self-signed one made at first start for `names` and kept in the data dir's `tls/`. The
//! leaf's SHA-256 fingerprint is what a device pins (shown by status, `doctor`, the log).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, sha256};

/// How long a generated certificate is valid: Apple devices refuse server certificates valid
/// for longer than 825 days.
const GENERATED_DAYS: i64 = 825;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}. Check api.tls.cert_file / key_file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}. Check api.tls.cert_file / key_file")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot write the generated certificate to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a certificate for api.tls.names: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the certificate in {path} cannot be parsed")]
    Parse { path: PathBuf },
}

/// What a device and an operator need to know about the served certificate.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertInfo {
    /// Lowercase hex SHA-256 of the leaf certificate (DER), for pinning.
    pub fingerprint_sha256: String,
    /// Base64 SHA-256 of the leaf's public key (SPKI), for key pinning.
    pub spki_sha256_base64: String,
    /// RFC 3339.
    pub not_after: String,
    #[serde(skip)]
    pub not_after_unix: i64,
    pub generated: bool,
    #[schema(value_type = String)]
    pub cert_file: PathBuf,
}

/// The acceptor the server uses, and the certificate's facts.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub info: CertInfo,
}

/// The certificate and key files `cfg` names, or the generated ones in `data_dir/tls`.
pub fn files(cfg: &TlsConfig, data_dir: &Path) -> (PathBuf, PathBuf) {
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) if !cfg.generate => (c.clone(), k.clone()),
        _ => {
            let dir = data_dir.join("tls");
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
    }
}

/// Loads (and with `generate = true`, first makes) the certificate and builds the acceptor.
pub fn load(cfg: &TlsConfig, data_dir: &Path) -> Result<Tls, TlsError> {
    let (cert_path, key_path) = files(cfg, data_dir);
    if cfg.generate && !generated_matches(&cert_path, &cfg.names) {
        generate(&cfg.names, &cert_path, &key_path)?;
    }
    let chain = read_chain(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| pem_error(&key_path, e, "private key"))?;
    let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain.clone(), key)?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    let info = info_of(&chain[0], &cert_path, cfg.generate)?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(sc)),
        info,
    })
}

/// The facts of the certificate `cfg` names (or the generated one), without making one.
pub fn inspect(cfg: &TlsConfig, data_dir: &Path) -> Result<CertInfo, TlsError> {
    let (cert_path, _) = files(cfg, data_dir);
    let chain = read_chain(&cert_path)?;
    info_of(&chain[0], &cert_path, cfg.generate)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error, what: &'static str) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.into(),
            source,
        },
        _ => TlsError::Pem {
            path: path.into(),
            what,
        },
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, e, "certificate"))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(chain)
}

fn info_of(leaf: &CertificateDer<'_>, path: &Path, generated: bool) -> Result<CertInfo, TlsError> {
    use base64::Engine;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| TlsError::Parse { path: path.into() })?;
    let not_after = cert.validity().not_after.to_datetime();
    Ok(CertInfo {
        fingerprint_sha256: hex::encode(sha256(leaf)),
        spki_sha256_base64: base64::engine::general_purpose::STANDARD
            .encode(sha256(cert.public_key().raw)),
        not_after: not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        not_after_unix: not_after.unix_timestamp(),
        generated,
        cert_file: path.into(),
    })
}

/// The names a generated certificate is for: the configured ones and loopback, so the CLI on
/// this PC reaches the daemon by `127.0.0.1` too.
fn generated_names(names: &[String]) -> Vec<String> {
    let mut all: Vec<String> = names.to_vec();
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !all.iter().any(|a| a.eq_ignore_ascii_case(n)) {
            all.push(n.into());
        }
    }
    all
}

/// True when a generated certificate exists, is for these names and is not expired, so it is
/// reused (a device that pinned it keeps working).
fn generated_matches(cert_path: &Path, names: &[String]) -> bool {
    let Ok(text) = std::fs::read(cert_path) else {
        return false;
    };
    let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(&text).next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&leaf) else {
        return false;
    };
    let mut have: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                        4 => {
                            Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string())
                        }
                        16 => {
                            Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string())
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut want = generated_names(names);
    have.sort();
    want.sort();
    let fresh =
        cert.validity().not_after.timestamp() > time::OffsetDateTime::now_utc().unix_timestamp();
    have == want && fresh
}

fn generate(names: &[String], cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let mut params = rcgen::CertificateParams::new(generated_names(names))?;
    let now = time::OffsetDateTime::now_utc();
    // A day back for clocks behind ours; the span, not_before to not_after, is what Apple
    // devices limit (825 days), so not_after counts from not_before.
    params.not_before = now - time::Duration::days(1);
    params.not_after = params.not_before + time::Duration::days(GENERATED_DAYS);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("pointsd", |n| n.as_str()),
    );
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let write = |path: &Path, text: String, private: bool| -> Result<(), TlsError> {
        let err = |source| TlsError::Write {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::config::private_dir(dir).map_err(err)?;
        }
        let tmp = path.with_extension(format!("pem.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        // The key is owner-only from its creation (never readable by others, not even for
        // the moment between a write and a chmod), whatever the umask.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let written = opts.open(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        std::fs::rename(&tmp, path).map_err(err)
    };
    write(key_path, key.serialize_pem(), true)?;
    write(cert_path, cert.pem(), false)?;
    tracing::info!(cert = %cert_path.display(), names = ?names, "generated a self-signed TLS certificate");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            generate: true,
            names: vec!["store-pc.local".into(), "192.168.1.10".into()],
            ..TlsConfig::default()
        };
        let a = load(&cfg, dir.path()).unwrap().info;
        let b = load(&cfg, dir.path()).unwrap().info;
        assert_eq!(a.fingerprint_sha256, b.fingerprint_sha256, "reused");
        assert_eq!(a.fingerprint_sha256.len(), 64);
        assert_eq!(
            inspect(&cfg, dir.path()).unwrap().fingerprint_sha256,
            a.fingerprint_sha256
        );
        let days = (a.not_after_unix - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((820..=GENERATED_DAYS).contains(&days), "{days}");
        // The span Apple devices limit: not_before to not_after at most 825 days.
        let (cert_path, key_path) = files(&cfg, dir.path());
        let chain = read_chain(&cert_path).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let v = cert.validity();
        let span = v.not_after.timestamp() - v.not_before.timestamp();
        assert!(span <= GENERATED_DAYS * 86_400, "{} days", span / 86_400);
        assert!(
            span > (GENERATED_DAYS - 1) * 86_400,
            "{} days",
            span / 86_400
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is owner-only");
        }
        // Other names: a new certificate.
        let other = TlsConfig {
            names: vec!["till-2.local".into()],
            ..cfg
        };
        let c = load(&other, dir.path()).unwrap().info;
        assert_ne!(c.fingerprint_sha256, a.fingerprint_sha256);
    }

    #[test]
    fn missing_or_wrong_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let cfg = TlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(dir.path().join("key.pem")),
            ..TlsConfig::default()
        };
        let e = load(&cfg, dir.path()).err().unwrap().to_string();
        assert!(e.contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        let e = load(&cfg, dir.path()).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
