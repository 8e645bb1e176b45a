// Fails when src/gen/ is not what `npm run generate` produces from the
// current protos: regenerates into a temporary directory and compares.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const checkedIn = join(root, "src", "gen");
const scratch = mkdtempSync(join(tmpdir(), "ts-client-gen-"));

function files(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(files(path));
    else out.push(path);
  }
  return out;
}

try {
  execFileSync(join(root, "node_modules", ".bin", "buf"), ["generate", "--output", scratch], {
    cwd: root,
    stdio: "inherit",
  });
  const fresh = join(scratch, "src", "gen");
  const want = new Map(files(fresh).map((f) => [relative(fresh, f), readFileSync(f, "utf8")]));
  const have = new Map(files(checkedIn).map((f) => [relative(checkedIn, f), readFileSync(f, "utf8")]));
  const problems = [];
  for (const [name, text] of want) {
    if (!have.has(name)) problems.push(`missing: src/gen/${name}`);
    else if (have.get(name) !== text) problems.push(`stale:   src/gen/${name}`);
  }
  for (const name of have.keys()) {
    if (!want.has(name)) problems.push(`extra:   src/gen/${name}`);
  }
  if (problems.length > 0) {
    console.error(problems.join("\n"));
    console.error("\nsrc/gen/ is out of date with the protos: run `npm run generate` and commit the result.");
    process.exit(1);
  }
  console.log(`src/gen/ is up to date (${want.size} files).`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
