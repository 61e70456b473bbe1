import { chmod, readFile, writeFile } from 'node:fs/promises';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { SchemaMismatchError } from '../errors.js';

/**
 * The node's Ed25519 libp2p key, created once and kept in the data directory (mode 0600), so
 * the PeerId — the identity members know this device by — survives restarts.
 */
export async function loadOrCreatePeerKey(file: string): Promise<PrivateKey> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes);
    } catch (err) {
      throw new SchemaMismatchError(`peer key ${file} is unreadable: ${(err as Error).message}`);
    }
  }
  const key = await generateKeyPair('Ed25519');
  // 'wx' never overwrites a key another process wrote first; the data-dir lock makes that rare.
  await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' });
  await chmod(file, 0o600);
  return key;
}
