//! A private certificate authority and a server certificate it signed for 127.0.0.1, made
//! with the `openssl` command: what the tests of TLS connections (an https schema registry,
//! a `rediss://` online store) trust and serve. rustls refuses a CA certificate used as the
//! server's own, hence the two.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of a test CA and the server certificate it signed.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM), for IP address 127.0.0.1.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl TestCa {
    /// Makes them in `dir`; an error when `openssl` is missing or fails.
    pub fn make(dir: &Path) -> Result<TestCa, String> {
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(|e| e.to_string())?;
        let steps = [
            "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=quiver-test-ca -keyout ca.key -out ca.pem",
            "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out server.csr",
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out cert.pem -extfile ext.cnf",
        ];
        for step in steps {
            let out = Command::new("openssl")
                .args(step.split(' '))
                .current_dir(dir)
                .output()
                .map_err(|e| format!("openssl: {e} (scripts/test.sh installs it)"))?;
            if !out.status.success() {
                return Err(format!(
                    "openssl {step}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        })
    }
}
