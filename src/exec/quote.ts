import { invalidArgument } from "../errors.js";

// A well-formed surrogate pair is one code point under the `u` flag, so this matches only
// lone surrogates: they have no UTF-8 encoding and would reach the remote side as U+FFFD.
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Turns an argv array into one command line for the pool host's shell. SSH has no argv: the
 * server hands the exec string to the user's login shell as `$SHELL -c STRING`, so each
 * argument must survive exactly one round of POSIX shell parsing.
 *
 * Every argument is wrapped in single quotes, inside which a POSIX shell treats every byte
 * literally (no `$`, backtick, glob, `~` or backslash processing); a single quote itself is
 * written as `'\''` (close, escaped quote, reopen). Quoting unconditionally, even for plain
 * words, keeps this function too simple to get wrong. The empty string becomes `''`, so
 * empty arguments are kept. NUL cannot be quoted at all (C strings end there), and a lone
 * surrogate would silently change in transit, so both are rejected rather than altered.
 */
export function quoteArgv(argv: readonly string[]): string {
  if (argv.length === 0) throw invalidArgument("cannot build a remote command from an empty argv");
  return argv
    .map((arg, index) => {
      if (arg.includes("\0")) throw invalidArgument(`argv[${index}] contains a NUL byte, which cannot be passed to a remote command`);
      if (LONE_SURROGATE.test(arg)) throw invalidArgument(`argv[${index}] is not valid Unicode (lone surrogate)`);
      return `'${arg.replaceAll("'", "'\\''")}'`;
    })
    .join(" ");
}
