/**
 * A JSON file in stateDir that mirrors some in-memory state (client identities, boot journeys): loaded
 * once at start, saved after changes (debounced), and at stop. Saves never block the event loop and never
 * overlap; each writes a temporary file and renames it over the old one, so a crash leaves the old file.
 */
import fs from 'node:fs';
import type { Logger } from './log.js';

export class StateFile {
  private timer: NodeJS.Timeout | null = null;
  private saving: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    /** What is kept, for log lines: "client identities", "boot journeys". */
    private readonly what: string,
    private readonly snapshot: () => unknown,
    private readonly delayMs: number,
    private readonly log: Logger,
  ) {}

  /** Reads the file and hands its JSON to `apply` (which returns how many entries it took); a missing file is no error. */
  async load(apply: (json: unknown) => number): Promise<void> {
    try {
      const n = apply(JSON.parse(await fs.promises.readFile(this.file, 'utf8')));
      this.log.debug({ file: this.file, entries: n }, `${this.what} restored`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ file: this.file, err: (e as Error).message }, `${this.what} not restored`);
    }
  }

  /** The state changed: saved within `delayMs` (at most one save per delay). */
  changed(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.save();
    }, this.delayMs);
    this.timer.unref();
  }

  /** Saves now (a pending debounced save is folded into this one). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    return this.save();
  }

  private save(): Promise<void> {
    const write = async (): Promise<void> => {
      const tmp = `${this.file}.${process.pid}.tmp`;
      try {
        await fs.promises.writeFile(tmp, JSON.stringify(this.snapshot()));
        await fs.promises.rename(tmp, this.file);
      } catch (e) {
        this.log.warn({ file: this.file, err: (e as Error).message }, `${this.what} not saved`);
      }
    };
    this.saving = this.saving.then(write, write);
    return this.saving;
  }
}
