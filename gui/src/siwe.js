// Builds the EIP-4361 ("Sign-In with Ethereum") message the user signs, from the gateway's nonce.

/** The message text for `address` (EIP-55 checksummed) signing in to this page's origin. */
export function buildSignInMessage({ address, nonce, chainId, location, now = new Date(), ttlMinutes = 10 }) {
  const issuedAt = now.toISOString();
  const expiresAt = new Date(now.getTime() + ttlMinutes * 60_000).toISOString();
  return [
    `${location.host} wants you to sign in with your Ethereum account:`,
    address,
    '',
    'Sign in to Flowork.',
    '',
    `URI: ${location.origin}/`,
    'Version: 1',
    `Chain ID: ${chainId}`,
    `Nonce: ${nonce}`,
    `Issued At: ${issuedAt}`,
    `Expiration Time: ${expiresAt}`,
  ].join('\n');
}
