// An HTTP/2 server over TLS (node's http2 module, its static OpenSSL):
//   node h2server.js PORT CERT KEY      prints "listening" once it listens
const http2 = require('http2'), fs = require('fs');
const [port, cert, key] = process.argv.slice(2);
const server = http2.createSecureServer({cert: fs.readFileSync(cert), key: fs.readFileSync(key)});
server.on('stream', (stream, headers) => {
  let body = '';
  stream.on('data', d => body += d);
  stream.on('end', () => {
    stream.respond({':status': 200, 'content-type': 'application/json', 'x-served-by': 'node-h2'});
    stream.end(JSON.stringify({path: headers[':path'], method: headers[':method'], got: body}));
  });
});
server.listen(+port, '127.0.0.1', () => console.log('listening'));
