/**
 * Signing and hashing as the core uses them, injected like the runtime: Node's native crypto at
 * the Node edge (`src/node/native-signatures.ts`). `sign` signs with this device's own key (the
 * one its PeerId names); `verify` checks a signature against the key a PeerId names, so a
 * member's signatures are checked against its member row alone.
 */
export interface Signatures {
  /** This device's PeerId: the key `sign` signs with. */
  readonly peer: string;
  sha256(data: Uint8Array): Uint8Array;
  /** An Ed25519 signature of `message` by this device's key. */
  sign(message: Uint8Array): Uint8Array;
  /**
   * `sign`'s signature, made off this thread where the runtime can (Node: libuv's thread pool;
   * a browser's WebCrypto signs asynchronously anyway), so that a write's storage work goes on
   * while its run is signed. A runtime without one resolves `sign`'s.
   */
  signOffThread(message: Uint8Array): Promise<Uint8Array>;
  /** Whether `signature` over `message` is by the Ed25519 key `peer` (a PeerId string) names; false for a PeerId that names none. */
  verify(peer: string, message: Uint8Array, signature: Uint8Array): boolean;
}
