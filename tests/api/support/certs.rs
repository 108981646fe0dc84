//! Throw-away certificates: a test CA and leaf certificates signed by it.

use std::path::{Path, PathBuf};

use gatehouse::config::CertificateSettings;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A certificate authority that the test client trusts.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate: PEM files on disk and its DER for comparisons.
pub struct Leaf {
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// This CA's certificate in a PEM file of its own folder, for settings that name
    /// trusted CAs by file (`ca_file`).
    pub fn pem_file(&self) -> (tempfile::TempDir, PathBuf) {
        let (dir, path) = cert_dir();
        let file = path.join("ca.pem");
        std::fs::write(&file, self.pem()).unwrap();
        (dir, file)
    }

    /// A certificate for `hosts`, signed by this CA.
    pub fn leaf(&self, hosts: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `<name>.pem` and `<name>.key` into `dir`, for the TLS settings.
    pub fn write(&self, dir: &Path, name: &str, hosts: &[&str]) -> CertificateSettings {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        CertificateSettings {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cert,
            key,
        }
    }
}

/// A fresh folder for certificate files.
pub fn cert_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}
