/**
 * Certificates made at test time with openssl: a throwaway CA and a
 * certificate for 127.0.0.1 and localhost signed by it.
 *
 * @module
 */
import { programRuns, skipUnless } from "./requirements.ts";

/** Whether `openssl` can be run here. */
export const OPENSSL_AVAILABLE = await programRuns("openssl", ["version"]);

/** `ignore` for `Deno.test` of TLS tests (see {@link skipUnless}). */
export function skipWithoutOpenssl(): boolean {
  return skipUnless(OPENSSL_AVAILABLE, "openssl", "openssl");
}

/** Files of a test certificate, and the CA that signed it. */
export interface TestCertificates {
  /** The CA certificate, PEM, for `Deno.createHttpClient({ caCerts })`. */
  caPem: string;
  certFile: string;
  keyFile: string;
}

async function openssl(args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(
      `openssl ${args[0]} failed: ${new TextDecoder().decode(stderr)}`,
    );
  }
}

/** Makes a CA and a server certificate in `dir`. */
export async function makeTestCertificates(
  dir: string,
): Promise<TestCertificates> {
  const file = (name: string) => `${dir}/${name}`;
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-keyout",
    file("ca.key"),
    "-out",
    file("ca.pem"),
    "-subj",
    "/CN=verve test CA",
  ]);
  await openssl([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    file("key.pem"),
    "-out",
    file("server.csr"),
    "-subj",
    "/CN=localhost",
  ]);
  await Deno.writeTextFile(
    file("server.ext"),
    "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    file("server.csr"),
    "-days",
    "1",
    "-CA",
    file("ca.pem"),
    "-CAkey",
    file("ca.key"),
    "-CAcreateserial",
    "-extfile",
    file("server.ext"),
    "-out",
    file("cert.pem"),
  ]);
  return {
    caPem: await Deno.readTextFile(file("ca.pem")),
    certFile: file("cert.pem"),
    keyFile: file("key.pem"),
  };
}
