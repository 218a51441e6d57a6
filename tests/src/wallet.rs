//! A test wallet: builds EIP-4361 messages for a gateway and signs them like `personal_sign`.

use flowork_common::eth::{address_of, personal_sign, to_checksum_address};
use flowork_common::timefmt::format_ms;
use k256::ecdsa::SigningKey;

/// A secp256k1 key acting as a user's wallet.
pub struct Wallet {
    pub key: SigningKey,
}

impl Wallet {
    pub fn random() -> Self {
        loop {
            if let Ok(key) = SigningKey::from_slice(&rand_bytes()) {
                return Self { key };
            }
        }
    }

    /// The EIP-55 address.
    pub fn address(&self) -> String {
        to_checksum_address(&address_of(self.key.verifying_key()))
    }

    /// The user id the gateway gives this wallet.
    pub fn user(&self) -> String {
        self.address().to_lowercase()
    }

    pub fn sign(&self, message: &str) -> String {
        personal_sign(&self.key, message.as_bytes()).expect("signing works")
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let seed = uuid::Uuid::new_v4();
    let seed2 = uuid::Uuid::new_v4();
    bytes[..16].copy_from_slice(seed.as_bytes());
    bytes[16..].copy_from_slice(seed2.as_bytes());
    bytes
}

/// An EIP-4361 message for a gateway at `base` (`http://127.0.0.1:PORT`), issued now.
pub fn sign_in_message(base: &str, address: &str, nonce: &str, chain_id: u64, now_ms: i64) -> String {
    let domain = base.split_once("://").map(|(_, d)| d).unwrap_or(base);
    format!(
        "{domain} wants you to sign in with your Ethereum account:\n{address}\n\nSign in to Flowork.\n\n\
         URI: {base}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {}\nExpiration Time: {}",
        format_ms(now_ms),
        format_ms(now_ms + 300_000)
    )
}
