/**
 * Appends `value` to the list under `key`, in place. Listings of 10,000 volumes group their
 * rows this way; copying the list on every append (`[...(map.get(k) ?? []), v]`) is quadratic
 * in the rows of one key (a volume's snapshots, a group's members).
 */
export function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
