/**
 * Imported first by the CLI, before anything does asynchronous I/O: sizes libuv's thread pool, which every
 * callback `fs` call goes through. On small machines a pool larger than the cores costs more in thread
 * wake-ups than it gains (measured with bench/nbd.ts on 2 cores); an explicit UV_THREADPOOL_SIZE wins.
 */
import { availableParallelism } from 'node:os';

if (process.env.UV_THREADPOOL_SIZE === undefined) {
  process.env.UV_THREADPOOL_SIZE = String(Math.max(2, Math.min(4, availableParallelism())));
}
