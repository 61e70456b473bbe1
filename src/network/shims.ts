/**
 * Node 20 lacks two globals that libp2p 3 expects: `Promise.withResolvers` (Node 22) and a
 * global `WebSocket` for WebSocket dials (Node 22). Import this module before anything that
 * loads libp2p; it only fills what is missing, so newer runtimes keep their own.
 */
import WebSocket from 'ws';

interface PromiseWithResolversShape<T> {
  promise: Promise<T>;
  resolve: (value: T | PromiseLike<T>) => void;
  reject: (reason?: unknown) => void;
}

const promiseCtor = Promise as unknown as { withResolvers?: <T>() => PromiseWithResolversShape<T> };
if (typeof promiseCtor.withResolvers !== 'function') {
  promiseCtor.withResolvers = <T>() => {
    let resolve!: (value: T | PromiseLike<T>) => void;
    let reject!: (reason?: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const globals = globalThis as unknown as { WebSocket?: unknown };
if (globals.WebSocket === undefined) globals.WebSocket = WebSocket;
