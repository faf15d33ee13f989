/** True while a process with this pid exists (signal 0 reaches it); false for a pid that is not a positive integer. */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
