export * from "./names.js";
export * from "./argv.js";
export * from "./parse.js";
export * from "./errors.js";
export * from "./capabilities.js";
export * from "./client.js";
