/**
 * The isolation engine and the route state of one static tenant, built from a `dist/` build, as
 * the in-process benches (request-path.mjs, gc-deopt.mjs) route commands without a connection.
 * `load(path)` imports a module of that build.
 */
export async function tenantRouteState(load, tenant) {
  const { configFromObject } = await load('config/index.js');
  const { CursorRegistry } = await load('policy/cursors.js');
  const { IsolationEngine } = await load('rewrite/engine.js');
  const { ErrorCodes, ProxyError } = await load('errors.js');
  const engine = new IsolationEngine({
    config: configFromObject({}).isolation,
    cursors: new CursorRegistry(),
    sessionKey: Buffer.alloc(32, 1),
    collationSupported: () => false,
  });
  return {
    tenant,
    overConnectionLimit: undefined,
    engine: engine.forTenant(tenant),
    engineError: undefined,
    unauthorized: (name) => new ProxyError(ErrorCodes.Unauthorized, name),
  };
}
