// The live feed's event cursor, `<boot>.<seq>`: which gateway process numbered the event, and its number there.

/** Splits a cursor into `{boot, seq}`. */
export function parseCursor(cursor) {
  const at = cursor.lastIndexOf('.');
  return { boot: cursor.slice(0, at), seq: Number(cursor.slice(at + 1)) };
}
