import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { quoteArgv } from "../../src/exec/quote.js";

/** Arguments an attacker-chosen dataset name, property value or path could contain. */
const HOSTILE: readonly string[] = [
  "plain",
  "",
  " ",
  "two words",
  "it's",
  "'",
  "''",
  "'\\''",
  '"double"',
  "$HOME",
  "${HOME}",
  "$(id -u)",
  "`id -u`",
  "a; touch /tmp/zcsi-pwned",
  "a | cat",
  "a && b || c",
  "a & b",
  "line1\nline2",
  "\n",
  "\r\n\t",
  "*",
  "/*",
  "?",
  "[a-z]",
  "~",
  "~root",
  "-rf",
  "--",
  "-o",
  "\\",
  "\\n",
  "back\\slash'quote\"mix$`",
  "!",
  "!!",
  "#comment",
  "a=b",
  "{a,b}",
  "<in >out 2>&1",
  "(subshell)",
  "ünïcödé ✓ 日本語 🚀",
  "\u00a0nbsp\u200bzwsp",
  "\x01\x07\x1b[31m\x7f",
  "x".repeat(300),
  "'".repeat(300),
  "$(".repeat(100),
  "tank/k8s/pvc-1234@zcsi-snap",
];

const SHELLS = ["/bin/sh", "/bin/dash", "/bin/bash"].filter((s) => existsSync(s));

/**
 * Runs `printf '%s\0' ARGS...` through a real shell's `-c`, the way sshd hands the exec
 * string to the login shell, and returns the arguments the command actually received.
 */
function roundTrip(shell: string, args: readonly string[]): string[] {
  const command = quoteArgv(["printf", "%s\\0", ...args]);
  const result = spawnSync(shell, ["-c", command], { cwd: "/", env: { PATH: "/usr/bin:/bin", HOME: "/nonexistent" } });
  if (result.status !== 0) throw new Error(`${shell} exited ${result.status}: ${result.stderr.toString()}`);
  const parts = result.stdout.toString("utf8").split("\0");
  expect(parts.pop()).toBe(""); // every argument is NUL-terminated
  return parts;
}

/** A small deterministic generator, so a failing case reproduces. */
function randomStrings(seed: number, count: number): string[] {
  const alphabet = [...Array.from({ length: 127 }, (_, i) => String.fromCharCode(i + 1)), "é", "✓", "🚀", "\u2028"];
  let state = seed;
  const next = (n: number): number => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
  return Array.from({ length: count }, () => Array.from({ length: next(40) }, () => alphabet[next(alphabet.length)]).join(""));
}

describe("quoteArgv", () => {
  it("single-quotes every argument, plain words included", () => {
    expect(quoteArgv(["zfs", "create", "tank/a b"])).toBe("'zfs' 'create' 'tank/a b'");
  });

  it("writes a single quote as close, escaped quote, reopen", () => {
    expect(quoteArgv(["it's"])).toBe("'it'\\''s'");
  });

  it("keeps an empty argument as ''", () => {
    expect(quoteArgv(["printf", ""])).toBe("'printf' ''");
  });

  it("rejects an empty argv with InvalidArgument", () => {
    expect(() => quoteArgv([])).toThrow(/empty argv/);
    try {
      quoteArgv([]);
    } catch (e) {
      expect(isZcsiError(e, "InvalidArgument")).toBe(true);
    }
  });

  it("rejects a NUL byte anywhere with InvalidArgument naming the argument", () => {
    for (const bad of ["\0", "a\0b", "tank/x\0; rm -rf /"]) {
      let caught: unknown;
      try {
        quoteArgv(["zfs", "destroy", bad]);
      } catch (e) {
        caught = e;
      }
      expect(isZcsiError(caught, "InvalidArgument")).toBe(true);
      expect((caught as Error).message).toContain("argv[2]");
    }
  });

  it("rejects a lone surrogate, which UTF-8 cannot carry", () => {
    expect(() => quoteArgv(["echo", "a\ud800b"])).toThrow(/lone surrogate/);
    expect(() => quoteArgv(["echo", "🚀"])).not.toThrow(); // a proper pair is fine
  });

  describe.each(SHELLS)("through a real %s -c", (shell) => {
    it("delivers every hostile argument byte for byte", () => {
      expect(roundTrip(shell, HOSTILE)).toEqual(HOSTILE);
    });

    it("delivers each hostile argument alone (no reliance on neighbours)", () => {
      for (const arg of HOSTILE) expect(roundTrip(shell, [arg])).toEqual([arg]);
    });

    it("delivers 300 pseudo-random strings over all ASCII controls and symbols", () => {
      const args = randomStrings(42, 300);
      expect(roundTrip(shell, args)).toEqual(args);
    });

    it("never runs an injected command", () => {
      const marker = `/tmp/zcsi-quote-${process.pid}`;
      const attempts = [`; touch ${marker}`, `$(touch ${marker})`, `\`touch ${marker}\``, `' ; touch ${marker} ; '`, `\n touch ${marker}`];
      try {
        roundTrip(shell, attempts);
        expect(existsSync(marker)).toBe(false);
      } finally {
        rmSync(marker, { force: true });
      }
    });

    it("treats a hostile command name as one literal word", () => {
      const result = spawnSync(shell, ["-c", quoteArgv(["-x; id"])], { env: { PATH: "/usr/bin:/bin" } });
      expect(result.status).toBe(127); // "command not found": the whole word was one name
    });
  });
});
