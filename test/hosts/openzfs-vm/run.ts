// Boots OpenZFS test VMs by hand, for poking at OpenZFS 2.x from a shell:
//
//   npx tsx test/hosts/openzfs-vm/run.ts [count]      (as root; Ctrl-C stops them)
//
// Prints an ssh command per VM (root, plain /bin/sh, a pool on its disk) and waits.
import { startOpenZfsVm, type OpenZfsVm } from "./vm.js";

const count = Number(process.argv[2] ?? "1");
if (!Number.isInteger(count) || count < 1 || count > 4) throw new Error("count: 1 to 4 VMs");
const vms: OpenZfsVm[] = [];
let stopping = false;
const stopAll = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await Promise.all(vms.map((vm) => vm.stop()));
  process.exit(0);
};
process.on("SIGINT", () => void stopAll());
process.on("SIGTERM", () => void stopAll());
try {
  const started = await Promise.all(Array.from({ length: count }, (_, i) => startOpenZfsVm({ name: `vm${i + 1}` })));
  vms.push(...started);
} catch (err) {
  await stopAll();
  throw err;
}
for (const vm of vms) {
  const packages = (vm.image.manifest["packages"] ?? {}) as Record<string, string>;
  console.log(`${vm.name}: booted in ${(vm.bootMs / 1000).toFixed(1)} s, OpenZFS ${packages["zfsutils-linux"] ?? "?"}, pool ${vm.pool} at ${vm.mountRoot}`);
  console.log(`  ssh -i ${vm.privateKeyPath} -o UserKnownHostsFile=${vm.knownHostsPath} -p ${vm.port} root@${vm.address}`);
  console.log(`  (the driver-facing sshd: port ${vm.servicePort})`);
}
console.log("Ctrl-C stops them.");
