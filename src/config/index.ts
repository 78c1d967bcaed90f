/** Public surface of the configuration module. */

export type {
  CertificateField,
  CertificateRule,
  ClientCertificateMode,
  CompressorName,
  HostPort,
  IdentityConfig,
  IdentityMethod,
  ListenerConfig,
  ListenerTlsConfig,
  LogLevel,
  PassthroughRule,
  PresentAs,
  ProxyConfig,
  ScramMechanism,
} from './types.js';
export { configFileOf, configFromObject, defaultConfig, loadConfig, type LoadConfigOptions } from './load.js';
export { ConfigValidationError, type ConfigIssue } from '../errors.js';
export {
  CONFIG_FILE_ENV,
  EXPLICIT_ENV,
  FLAG_FIELDS,
  envNameOf,
  knownEnvNames,
  preferredEnvNameOf,
  type ConfigFlags,
} from './env.js';
export { configToDocument, formatConfigYaml, maskSecrets } from './format.js';
export { formatHostPort, parseHostPort } from './host-port.js';
export { configSchema, schemaAt, schemaFields, type SchemaNode } from './schema.js';
export { MASK, maskUri, maskUrisInText } from '../secrets.js';
export { changedPaths, planReload, RESTART_REQUIRED_SETTINGS, type ReloadPlan } from './reload.js';
