// hello-js: the hello guest in JavaScript, built with componentize-js
// (through jco). Answers every request with a fixed plain-text greeting, like
// the Rust `hello` guest, so the two can be compared and swapped.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from 'wasi:http/types@0.2.12';

const encoder = new TextEncoder();
const greeting = encoder.encode('Hello from JavaScript!\n');
const contentType = encoder.encode('text/plain; charset=utf-8');

export const incomingHandler = {
  handle(_request, responseOut) {
    const response = new OutgoingResponse(Fields.fromList([['content-type', contentType]]));
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(greeting);
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
