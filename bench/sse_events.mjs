// Server-sent events for the load tests (serve_load.mjs, peer/serve_side_by_side.mjs): splits the
// complete events off `buffer`, returning the JSON of each `data:` event but `[DONE]`, and what
// is left for the next piece of the stream.
export function takeEvents(buffer) {
  const chunks = [];
  let end;
  while ((end = buffer.indexOf('\n\n')) >= 0) {
    const event = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    if (event.startsWith('data: ') && event !== 'data: [DONE]') chunks.push(JSON.parse(event.slice(6)));
  }
  return { chunks, rest: buffer };
}
