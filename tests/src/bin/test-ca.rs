//! `test-ca DIR`: a throw-away certificate authority for the SDKs' TLS tests, written to DIR as `ca.pem` and a
//! certificate for the loopback names it signed, `tls-cert.pem` with its key `tls-key.pem` (0600), the files a
//! test gives to `flowork-gateway serve --tls-cert --tls-key` and to the client's CA option.

use std::path::PathBuf;

use anyhow::Context;
use flowork_tests::tls::TestCa;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args_os().nth(1).context("usage: test-ca DIR")?);
    std::fs::create_dir_all(&dir)?;
    let ca = TestCa::new("flowork SDK test CA")?;
    ca.write(&dir.join("ca.pem"))?;
    ca.issue("flowork SDK test gateway")?.write(&dir.join("tls-cert.pem"), &dir.join("tls-key.pem"))?;
    Ok(())
}
