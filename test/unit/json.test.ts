import { describe, expect, it } from "vitest";
import { parseJsonObject } from "../../src/util/json.js";

describe("parseJsonObject", () => {
  it("returns the object a record holds, nested values included", () => {
    expect(parseJsonObject('{"from":"alice:tank/k8s/v","epoch":2,"x":{"y":[1]}}')).toEqual({ from: "alice:tank/k8s/v", epoch: 2, x: { y: [1] } });
    expect(parseJsonObject("{}")).toEqual({});
  });

  it("returns undefined, never throws, for no text, text that is not JSON, and JSON that is not an object", () => {
    for (const text of [undefined, "", "-", "{", "not json", "null", "[]", '[{"a":1}]', '"text"', "42", "true"]) {
      expect(parseJsonObject(text), String(text)).toBeUndefined();
    }
  });
});
