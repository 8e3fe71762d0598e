//! A small certificate authority for mutual-TLS tests, run with the real `openssl` CLI:
//! CAs, certificates with chosen subjects, SANs and validity (also in the past), and
//! revocation lists.

use std::path::{Path, PathBuf};
use std::process::Command;

/// CAs and the certificates they issue, as PEM files in one directory.
pub struct Pki {
    dir: PathBuf,
}

/// When an issued certificate is valid.
pub enum Validity {
    /// From now for 30 days.
    Current,
    /// January 2020 only: long expired.
    Expired,
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pki {
    /// A PKI writing into `dir` (created when missing).
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki directory");
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// The path of `DIR/file`, as config text wants it.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A self-signed CA `NAME.{pem,key}` (EC P-256) with its `openssl ca` database.
    pub fn ca(&self, name: &str) {
        let (pem, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &pem,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let db = self.dir.join(format!("{name}.db"));
        std::fs::create_dir_all(&db).expect("ca database");
        std::fs::write(db.join("index.txt"), "").expect("index");
        std::fs::write(db.join("serial"), "1000\n").expect("serial");
        std::fs::write(db.join("crlnumber"), "1000\n").expect("crlnumber");
        let config = format!(
            "[ca]\ndefault_ca = this\n[this]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n\
             serial = {db}/serial\ncrlnumber = {db}/crlnumber\ncertificate = {pem}\n\
             private_key = {key}\ndefault_md = sha256\ndefault_crl_days = 30\npolicy = loose\n\
             unique_subject = no\n[loose]\ncommonName = supplied\norganizationName = optional\n",
            db = db.display()
        );
        std::fs::write(db.join("ca.cnf"), config).expect("ca config");
    }

    /// `NAME.{pem,key}` issued by `ca` for `subject` (`/CN=billing/O=Acme`) with the
    /// subject alternative names `sans` (`DNS:a.test,URI:spiffe://x`).
    pub fn issue(&self, ca: &str, name: &str, subject: &str, sans: &str, validity: Validity) {
        let (pem, key, csr) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
        );
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        let extensions = self.path(&format!("{name}.ext"));
        std::fs::write(
            &extensions,
            format!(
                "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth,serverAuth\nsubjectAltName={sans}\n"
            ),
        )
        .expect("extensions");
        let config = self.path(&format!("{ca}.db/ca.cnf"));
        let mut args = vec![
            "ca",
            "-batch",
            "-notext",
            "-preserveDN",
            "-config",
            &config,
            "-in",
            &csr,
            "-out",
            &pem,
            "-extfile",
            &extensions,
        ];
        match validity {
            Validity::Current => args.extend(["-days", "30"]),
            Validity::Expired => args.extend([
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
            ]),
        }
        openssl(&args);
    }

    /// Revokes `NAME.pem` in `ca`'s database and writes `CA.crl`.
    pub fn revoke(&self, ca: &str, name: &str) {
        let config = self.path(&format!("{ca}.db/ca.cnf"));
        let pem = self.path(&format!("{name}.pem"));
        openssl(&["ca", "-batch", "-config", &config, "-revoke", &pem]);
        let crl = self.path(&format!("{ca}.crl"));
        openssl(&["ca", "-batch", "-config", &config, "-gencrl", "-out", &crl]);
    }

    /// The SHA-256 fingerprint of `NAME.pem`, 64 lowercase hex digits.
    pub fn fingerprint(&self, name: &str) -> String {
        let output = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(self.path(&format!("{name}.pem")))
            .output()
            .expect("run openssl");
        let text = String::from_utf8_lossy(&output.stdout);
        let (_, hex) = text.trim().split_once('=').expect("fingerprint line");
        hex.replace(':', "").to_ascii_lowercase()
    }
}
