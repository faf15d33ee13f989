import { describe, expect, it } from "vitest";
import { decidePublish, decideUnpublish } from "../../src/csi/publish.js";
import { isZcsiError, type ErrorKind } from "../../src/errors.js";
import { formatPublications, parsePublications, type Publication, type PublishedMode } from "../../src/volumes/publications.js";

const VOLUME = "alice:tank/k8s/pvc-1";
const pub = (node: string, mode: PublishedMode, readonly = false): Publication => ({ node, mode, readonly });

function kindOf(fn: () => unknown): ErrorKind | "OK" {
  try {
    fn();
    return "OK";
  } catch (err) {
    if (isZcsiError(err)) return err.kind;
    throw err;
  }
}

describe("ControllerPublishVolume access-mode rules (CSI spec)", () => {
  const SINGLE: PublishedMode[] = ["SINGLE_NODE_WRITER", "SINGLE_NODE_SINGLE_WRITER", "SINGLE_NODE_MULTI_WRITER", "SINGLE_NODE_READER_ONLY"];

  it("records a first publication of any mode", () => {
    for (const mode of [...SINGLE, "MULTI_NODE_MULTI_WRITER", "MULTI_NODE_READER_ONLY", "MULTI_NODE_SINGLE_WRITER"] as PublishedMode[]) {
      expect(decidePublish([], pub("x", mode), VOLUME)).toEqual({ changed: true, publications: [pub("x", mode)] });
    }
  });

  it.each(SINGLE)("refuses %s on a second node with FAILED_PRECONDITION", (mode) => {
    expect(kindOf(() => decidePublish([pub("x", mode)], pub("y", mode), VOLUME))).toBe("FailedPrecondition");
  });

  it("refuses a single-node mode on a node while another node holds the volume in a multi-node mode", () => {
    expect(kindOf(() => decidePublish([pub("x", "MULTI_NODE_MULTI_WRITER")], pub("y", "SINGLE_NODE_WRITER"), VOLUME))).toBe("FailedPrecondition");
  });

  it("refuses a multi-node mode on a node while another node holds the volume in a single-node mode", () => {
    expect(kindOf(() => decidePublish([pub("x", "SINGLE_NODE_WRITER")], pub("y", "MULTI_NODE_MULTI_WRITER"), VOLUME))).toBe("FailedPrecondition");
  });

  it("publishes multi-node modes on any number of nodes", () => {
    const rwx = [pub("a", "MULTI_NODE_MULTI_WRITER"), pub("b", "MULTI_NODE_MULTI_WRITER")];
    expect(decidePublish(rwx, pub("c", "MULTI_NODE_MULTI_WRITER"), VOLUME).publications.map((p) => p.node)).toEqual(["a", "b", "c"]);
    const rox = [pub("a", "MULTI_NODE_READER_ONLY", true)];
    expect(decidePublish(rox, pub("b", "MULTI_NODE_READER_ONLY", true), VOLUME).changed).toBe(true);
  });

  it("MULTI_NODE_SINGLE_WRITER: one read-write node, any number of readonly ones", () => {
    const writer = [pub("a", "MULTI_NODE_SINGLE_WRITER")];
    expect(kindOf(() => decidePublish(writer, pub("b", "MULTI_NODE_SINGLE_WRITER"), VOLUME))).toBe("FailedPrecondition");
    expect(kindOf(() => decidePublish(writer, pub("b", "MULTI_NODE_MULTI_WRITER"), VOLUME))).toBe("FailedPrecondition");
    expect(kindOf(() => decidePublish(writer, pub("b", "MULTI_NODE_SINGLE_WRITER", true), VOLUME))).toBe("OK");
    expect(kindOf(() => decidePublish([pub("a", "MULTI_NODE_SINGLE_WRITER", true)], pub("b", "MULTI_NODE_SINGLE_WRITER"), VOLUME))).toBe("OK");
  });

  it("is idempotent for the same node with the same mode and readonly flag: nothing to record", () => {
    const existing = [pub("x", "SINGLE_NODE_WRITER")];
    expect(decidePublish(existing, pub("x", "SINGLE_NODE_WRITER"), VOLUME)).toEqual({ changed: false, publications: existing });
  });

  it("answers ALREADY_EXISTS for the same node with another readonly flag or mode", () => {
    expect(kindOf(() => decidePublish([pub("x", "SINGLE_NODE_WRITER")], pub("x", "SINGLE_NODE_WRITER", true), VOLUME))).toBe("AlreadyExists");
    expect(kindOf(() => decidePublish([pub("x", "MULTI_NODE_MULTI_WRITER")], pub("x", "MULTI_NODE_READER_ONLY"), VOLUME))).toBe("AlreadyExists");
  });

  it("names the node that holds the volume in the error", () => {
    expect(() => decidePublish([pub("worker-1", "SINGLE_NODE_WRITER")], pub("worker-2", "SINGLE_NODE_WRITER"), VOLUME)).toThrow(/published to node worker-1/);
  });
});

describe("ControllerUnpublishVolume", () => {
  const both = [pub("a", "MULTI_NODE_MULTI_WRITER"), pub("b", "MULTI_NODE_MULTI_WRITER")];

  it("removes the named node, and is a no-op for a node that has nothing", () => {
    expect(decideUnpublish(both, "a")).toEqual({ changed: true, publications: [both[1]] });
    expect(decideUnpublish(both, "zz")).toEqual({ changed: false, publications: both });
    expect(decideUnpublish([], "a")).toEqual({ changed: false, publications: [] });
  });

  it("removes every node when none is named (CSI spec: unpublish from all nodes)", () => {
    expect(decideUnpublish(both, undefined)).toEqual({ changed: true, publications: [] });
  });
});

describe("the zcsi:published-to record", () => {
  it("is sorted by node, with short mode codes and a readonly flag", () => {
    const text = formatPublications([pub("worker-2", "MULTI_NODE_READER_ONLY", true), pub("worker-1", "SINGLE_NODE_MULTI_WRITER")]);
    expect(text).toBe("worker-1:snmw,worker-2:mnro:ro");
    expect(parsePublications(text)).toEqual({ publications: [pub("worker-1", "SINGLE_NODE_MULTI_WRITER"), pub("worker-2", "MULTI_NODE_READER_ONLY", true)], unreadable: [] });
  });

  it("round-trips every mode", () => {
    const all = (["SINGLE_NODE_WRITER", "SINGLE_NODE_READER_ONLY", "MULTI_NODE_READER_ONLY", "MULTI_NODE_SINGLE_WRITER", "MULTI_NODE_MULTI_WRITER", "SINGLE_NODE_SINGLE_WRITER", "SINGLE_NODE_MULTI_WRITER"] as PublishedMode[]).map(
      (mode, i) => pub(`n${i}`, mode, i % 2 === 0),
    );
    expect(parsePublications(formatPublications(all)).publications).toEqual(all);
  });

  it("reads nothing from an absent or empty property, and keeps entries it cannot read apart", () => {
    expect(parsePublications(undefined)).toEqual({ publications: [], unreadable: [] });
    expect(parsePublications("")).toEqual({ publications: [], unreadable: [] });
    expect(parsePublications("a:snw,bad entry,b:xyz,c:mnmw:rw,d:mnmw")).toEqual({
      publications: [pub("a", "SINGLE_NODE_WRITER"), pub("d", "MULTI_NODE_MULTI_WRITER")],
      unreadable: ["bad entry", "b:xyz", "c:mnmw:rw"],
    });
  });
});
