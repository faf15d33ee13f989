import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { InstrumentedExecutor } from "../../src/exec/instrumented.js";
import { LocalExecutor } from "../../src/exec/local.js";
import { CommandMetrics, createRegistry } from "../../src/metrics.js";

describe("zcsi_command_duration_seconds", () => {
  it("counts every command by host, command and outcome: ok, nonzero, timeout, error", async () => {
    const registry = createRegistry({ processMetrics: false });
    const exec = new InstrumentedExecutor(new LocalExecutor({ host: "node-1" }), pino({ level: "silent" }), new CommandMetrics(registry));
    await exec.run(["true"]);
    await exec.run(["true"]);
    await exec.run(["sh", "-c", "exit 3"]);
    await expect(exec.run(["sleep", "5"], { timeoutMs: 50 })).rejects.toMatchObject({ kind: "DeadlineExceeded" });
    await expect(exec.run(["/nonexistent/zcsi-command"])).rejects.toMatchObject({ kind: "Unavailable" });
    const text = await registry.getSingleMetricAsString("zcsi_command_duration_seconds");
    const count = (labels: string): number | undefined => {
      const line = text.split("\n").find((l) => l.startsWith(`zcsi_command_duration_seconds_count{${labels}}`));
      return line === undefined ? undefined : Number(line.split(" ").pop());
    };
    expect(count('host="node-1",command="true",outcome="ok"')).toBe(2);
    expect(count('host="node-1",command="sh",outcome="nonzero"')).toBe(1);
    expect(count('host="node-1",command="sleep",outcome="timeout"')).toBe(1);
    expect(count('host="node-1",command="zcsi-command",outcome="error"')).toBe(1);
  });
});
