/**
 * Setup file of the `openzfs-vm` project: before a file's hooks run (and outside their
 * timeouts), wait for the VM image that global-setup.ts finds or builds in the background.
 */
import { waitForImage } from "./shared.js";

await waitForImage();
