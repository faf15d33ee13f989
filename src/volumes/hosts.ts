import type { PoolHostConfig } from "../config.js";
import { invalidArgument } from "../errors.js";
import type { Executor } from "../exec/executor.js";
import { Zfs } from "../zfs/client.js";

/** A configured pool host with its command channel. */
export interface PoolHost {
  readonly config: PoolHostConfig;
  readonly exec: Executor;
  readonly zfs: Zfs;
  /** The pool holding parentDataset (its first component). */
  readonly pool: string;
}

export class PoolHosts {
  private readonly byName: Map<string, PoolHost>;

  constructor(hosts: readonly { config: PoolHostConfig; exec: Executor }[], options: { timeoutMs?: number } = {}) {
    this.byName = new Map(
      hosts.map(({ config, exec }) => [
        config.name,
        { config, exec, zfs: new Zfs(exec, options), pool: config.parentDataset.split("/")[0] ?? config.parentDataset },
      ]),
    );
  }

  get configs(): PoolHostConfig[] {
    return this.all().map((h) => h.config);
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  all(): PoolHost[] {
    return [...this.byName.values()].sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  get(name: string): PoolHost {
    const host = this.byName.get(name);
    if (!host) throw invalidArgument(`no pool host named ${JSON.stringify(name)} in the config`);
    return host;
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((h) => h.exec.close()));
  }
}
