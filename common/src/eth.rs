//! Ethereum primitives for wallet sign-in: Keccak-256, EIP-55 checksummed addresses and EIP-191
//! `personal_sign` signature recovery with the k256 crate.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};
use thiserror::Error;

/// Why a signature was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signature must be 65 bytes of hex (r, s, v)")]
    Malformed,
    #[error("the recovery byte v must be 27, 28, 0 or 1")]
    BadRecoveryId,
    #[error("the signature's s value is in the upper half of the curve order (EIP-2): not accepted")]
    HighS,
    #[error("no public key can be recovered from this signature")]
    Unrecoverable,
}

pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// The EIP-191 version 0x45 hash of a message, as `personal_sign` signs it.
pub fn personal_message_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// The EIP-55 checksummed form of a 20-byte address.
pub fn to_checksum_address(address: &[u8; 20]) -> String {
    let lower = hex::encode(address);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 { c.to_ascii_uppercase() } else { c });
    }
    out
}

/// Parses an address that must carry a valid EIP-55 checksum.
pub fn parse_checksum_address(text: &str) -> Option<[u8; 20]> {
    let hex_part = text.strip_prefix("0x")?;
    if hex_part.len() != 40 {
        return None;
    }
    let bytes: [u8; 20] = hex::decode(hex_part).ok()?.try_into().ok()?;
    (to_checksum_address(&bytes) == text).then_some(bytes)
}

/// Recovers the address that produced an EIP-191 `personal_sign` signature (`0x` + r‖s‖v hex) over `message`.
/// Signatures with a high s (malleable copies of valid ones) are refused.
pub fn recover_personal_signer(message: &[u8], signature_hex: &str) -> Result<[u8; 20], SignatureError> {
    let raw = hex::decode(signature_hex.strip_prefix("0x").unwrap_or(signature_hex))
        .map_err(|_| SignatureError::Malformed)?;
    if raw.len() != 65 {
        return Err(SignatureError::Malformed);
    }
    let v = match raw[64] {
        27 | 28 => raw[64] - 27,
        0 | 1 => raw[64],
        _ => return Err(SignatureError::BadRecoveryId),
    };
    let signature = Signature::from_slice(&raw[..64]).map_err(|_| SignatureError::Malformed)?;
    if signature.normalize_s().is_some() {
        return Err(SignatureError::HighS);
    }
    let recovery_id = RecoveryId::from_byte(v).ok_or(SignatureError::BadRecoveryId)?;
    let key = VerifyingKey::recover_from_prehash(&personal_message_hash(message), &signature, recovery_id)
        .map_err(|_| SignatureError::Unrecoverable)?;
    Ok(address_of(&key))
}

/// The address of a public key: the last 20 bytes of the Keccak-256 of its uncompressed point.
pub fn address_of(key: &VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    address
}

/// Signs like a wallet's `personal_sign` (for tests and development keys): `0x` + r‖s‖v with v = 27/28.
pub fn personal_sign(key: &SigningKey, message: &[u8]) -> Result<String, SignatureError> {
    let (signature, recovery_id) =
        key.sign_prehash_recoverable(&personal_message_hash(message)).map_err(|_| SignatureError::Unrecoverable)?;
    let mut raw = signature.to_bytes().to_vec();
    raw.push(27 + recovery_id.to_byte());
    Ok(format!("0x{}", hex::encode(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_the_eip55_examples() {
        for address in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let bytes = parse_checksum_address(address).expect(address);
            assert_eq!(to_checksum_address(&bytes), address);
        }
        assert!(parse_checksum_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_none());
        assert!(parse_checksum_address("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_none());
        assert!(parse_checksum_address("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_none());
    }

    #[test]
    fn the_well_known_test_key_has_the_well_known_address() {
        // Private key 0x…01's address, as every Ethereum library computes it.
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let key = SigningKey::from_slice(&secret).unwrap();
        assert_eq!(to_checksum_address(&address_of(key.verifying_key())), "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf");
    }

    #[test]
    fn recovers_the_signer_and_refuses_tampering_and_high_s() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let me = address_of(key.verifying_key());
        let signature = personal_sign(&key, b"hello").unwrap();
        assert_eq!(recover_personal_signer(b"hello", &signature), Ok(me));
        assert_ne!(recover_personal_signer(b"hellO", &signature), Ok(me));

        // v as 0/1 is accepted too.
        let mut raw = hex::decode(&signature[2..]).unwrap();
        raw[64] -= 27;
        assert_eq!(recover_personal_signer(b"hello", &hex::encode(&raw)), Ok(me));
        raw[64] = 29;
        assert_eq!(recover_personal_signer(b"hello", &hex::encode(&raw)), Err(SignatureError::BadRecoveryId));

        // The malleable twin (n - s, flipped v) is refused.
        let sig = Signature::from_slice(&hex::decode(&signature[2..]).unwrap()[..64]).unwrap();
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        let mut twin = high.to_bytes().to_vec();
        twin.push(if signature.ends_with("1b") { 28 } else { 27 });
        assert_eq!(recover_personal_signer(b"hello", &hex::encode(twin)), Err(SignatureError::HighS));

        assert_eq!(recover_personal_signer(b"hello", "0x1234"), Err(SignatureError::Malformed));
        assert_eq!(recover_personal_signer(b"hello", "zz"), Err(SignatureError::Malformed));
    }
}
