/**
 * Command classification (catalogue G1, items 3-5, 17-28, 53, 56): every command name a MongoDB
 * 8.x server registers, with its aliases and the removed commands old servers still run, has an
 * explicit entry here: answered locally, rewritten by a named handler, or refused with a stable
 * rule id. Anything else is refused as `command.unknown`. Names are case-sensitive (`Find` is
 * unknown) and compared exactly as the server does (first key of the body, catalogue 53).
 *
 * The list of names the server knows is test data (test/data/server-commands.json, built from the
 * manual's command reference and the server's all-commands tests); a unit test fails when a name
 * there has no entry here.
 *
 * Also here: the top-level fields each rewritten command may carry (catalogue G1, 17-19, 53).
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { numberOf, type RawDocument, type RawValue } from '../wire/raw-bson.js';
import { BsonType } from '../wire/bson-scan.js';
import { assertGenericArgument } from './generic-arguments.js';

/** The handlers the engine dispatches to. */
export type HandlerName =
  | 'find'
  | 'count'
  | 'distinct'
  | 'aggregate'
  | 'explain'
  | 'listIndexes'
  | 'listCollections'
  | 'insert'
  | 'update'
  | 'delete'
  | 'findAndModify'
  | 'bulkWrite'
  | 'getMore'
  | 'killCursors'
  | 'create'
  | 'createIndexes'
  | 'dropIndexes'
  | 'drop'
  | 'dropDatabase'
  | 'listDatabases'
  | 'collMod'
  | 'renameCollection'
  | 'endSessions'
  | 'killSessions'
  | 'commitTransaction'
  | 'abortTransaction'
  | 'refreshSessions'
  | 'startSession'
  | 'ping'
  | 'buildInfo'
  | 'atlasVersion'
  | 'getDefaultRWConcern'
  | 'serverStatus'
  | 'hostInfo'
  | 'getCmdLineOpts'
  | 'getParameter'
  | 'getLog'
  | 'currentOp'
  | 'top'
  | 'listCommands'
  | 'whatsmyuri'
  | 'getFreeMonitoringStatus';

export type CommandClass =
  { kind: 'local' } | { kind: 'rewrite'; handler: HandlerName } | { kind: 'refuse'; rule: string; reason: string };

/** Answered by the connection pipeline itself (handshake and the proxy's own authentication). */
const LOCAL_COMMANDS: readonly string[] = [
  'hello',
  'isMaster',
  'ismaster',
  'saslStart',
  'saslContinue',
  'authenticate',
  'logout',
  'connectionStatus',
];

/** Rewritten: command name (and alias) → handler. */
const REWRITTEN_COMMANDS: ReadonlyArray<readonly [string, HandlerName]> = [
  ['find', 'find'],
  ['count', 'count'],
  ['distinct', 'distinct'],
  ['aggregate', 'aggregate'],
  ['explain', 'explain'],
  ['listIndexes', 'listIndexes'],
  ['listCollections', 'listCollections'],
  ['insert', 'insert'],
  ['update', 'update'],
  ['delete', 'delete'],
  ['findAndModify', 'findAndModify'],
  ['findandmodify', 'findAndModify'],
  ['bulkWrite', 'bulkWrite'],
  ['getMore', 'getMore'],
  ['killCursors', 'killCursors'],
  ['create', 'create'],
  ['createIndexes', 'createIndexes'],
  ['dropIndexes', 'dropIndexes'],
  ['drop', 'drop'],
  ['dropDatabase', 'dropDatabase'],
  ['listDatabases', 'listDatabases'],
  ['collMod', 'collMod'],
  ['renameCollection', 'renameCollection'],
  ['endSessions', 'endSessions'],
  ['killSessions', 'killSessions'],
  ['commitTransaction', 'commitTransaction'],
  ['abortTransaction', 'abortTransaction'],
  ['refreshSessions', 'refreshSessions'],
  ['startSession', 'startSession'],
  ['ping', 'ping'],
  ['buildInfo', 'buildInfo'],
  ['buildinfo', 'buildInfo'],
  // Introspection: answered by the proxy from what every tenant may see (rewrite/introspection.ts),
  // or forwarded when the server's answer describes only the deployment.
  ['atlasVersion', 'atlasVersion'],
  ['getDefaultRWConcern', 'getDefaultRWConcern'],
  ['serverStatus', 'serverStatus'],
  ['hostInfo', 'hostInfo'],
  ['getCmdLineOpts', 'getCmdLineOpts'],
  ['getParameter', 'getParameter'],
  ['getLog', 'getLog'],
  ['currentOp', 'currentOp'],
  ['top', 'top'],
  ['listCommands', 'listCommands'],
  ['whatsmyuri', 'whatsmyuri'],
  ['getFreeMonitoringStatus', 'getFreeMonitoringStatus'],
];

interface RefusalGroup {
  rule: string;
  reason: string;
  names: readonly string[];
}

const words = (text: string): string[] => text.split(/\s+/).filter((word) => word.length > 0);

/** Refused commands, by rule. A name appears in exactly one group (checked at load). */
const REFUSAL_GROUPS: readonly RefusalGroup[] = [
  {
    rule: 'command.server-js',
    reason: 'runs server-side JavaScript and can write to other databases (catalogue 3)',
    names: ['mapReduce', 'mapreduce'],
  },
  {
    rule: 'command.removed',
    reason: 'removed from current servers; older servers still run it (catalogue 4)',
    names: words(`group eval $eval copydb copydbgetnonce copydbsaslstart clone cloneCollection geoNear geoSearch
      parallelCollectionScan repairDatabase repairCursor touch resync text getLastError getlasterror getPrevError
      getpreverror resetError reseterror getnonce authSchemaUpgrade availableQueryOptions shardConnPoolStats
      unsetSharding cursorInfo closeAllDatabases diagLogging checkShardingIndex planCacheListPlans
      planCacheListQueryShapes setFreeMonitoring donorStartMigration donorForgetMigration
      donorAbortMigration donorWaitForMigrationToCommit recipientSyncData recipientForgetMigration
      recipientVoteImportedFiles abortShardSplit commitShardSplit forgetShardSplit configureCollectionAutoSplitter
      waitForOngoingChunkSplits repairShardedCollectionChunksHistory startRecordingTraffic stopRecordingTraffic isSelf`),
  },
  {
    rule: 'command.user-management',
    reason: 'manages users and roles of the shared server (catalogue 26)',
    names: words(`createUser updateUser dropUser dropAllUsersFromDatabase grantRolesToUser revokeRolesFromUser usersInfo
      createRole updateRole dropRole dropAllRolesFromDatabase grantPrivilegesToRole revokePrivilegesFromRole
      grantRolesToRole revokeRolesFromRole rolesInfo invalidateUserCache oidcListKeys oidcRefreshKeys`),
  },
  {
    rule: 'command.sharding',
    reason: "sharding administration moves or exposes every tenant's data (catalogue 26)",
    names:
      words(`shardCollection shardcollection enableSharding enablesharding addShard addshard removeShard removeshard
      listShards listshards movePrimary moveprimary moveChunk movechunk flushRouterConfig flushrouterconfig
      getShardVersion getshardversion setShardVersion getDatabaseVersion getShardMap isdbgrid shardingState
      addShardToZone removeShardFromZone updateZoneKeyRange balancerStart balancerStop balancerStatus
      balancerCollectionStatus checkMetadataConsistency clearJumboFlag cleanupOrphaned reshardCollection
      abortReshardCollection commitReshardCollection cleanupReshardCollection configureCollectionBalancing
      configureQueryAnalyzer analyzeShardKey moveRange moveCollection abortMoveCollection unshardCollection
      abortUnshardCollection mergeChunks mergeAllChunksOnShard refineCollectionShardKey setAllowMigrations split
      splitChunk splitVector autoSplitVector untrackUnshardedCollection rewriteCollection abortRewriteCollection
      transitionFromDedicatedConfigServer transitionToDedicatedConfigServer startTransitionToDedicatedConfigServer
      stopTransitionToDedicatedConfigServer commitTransitionToDedicatedConfigServer
      getTransitionToDedicatedConfigServerStatus startShardDraining stopShardDraining shardDrainingStatus
      commitShardRemoval resetPlacementHistory recreateRangeDeletionTasks createUnsplittableCollection
      connPoolSync dropConnections multicast`),
  },
  {
    rule: 'command.replication',
    reason: 'replication commands act on the whole replica set or its oplog (catalogue 26)',
    names: words(`applyOps appendOplogNote replSetAbortPrimaryCatchUp replSetFreeze replSetGetConfig replSetGetStatus
      replSetInitiate replSetMaintenance replSetReconfig replSetResizeOplog replSetStepDown replSetStepUp
      replSetSyncFrom replSetGetRBID replSetHeartbeat replSetRequestVotes replSetUpdatePosition replSetTest
      replSetTestEgress`),
  },
  {
    rule: 'command.sessions',
    reason: 'kills sessions of every tenant sharing the backend user (catalogue 56)',
    names: words('killAllSessions killAllSessionsByPattern reapLogicalSessionCacheNow refreshLogicalSessionCacheNow'),
  },
  {
    rule: 'command.admin',
    reason: 'server administration affects every tenant (catalogue 26)',
    names: words(`shutdown fsync fsyncUnlock setParameter setClusterParameter
      getClusterParameter setDefaultRWConcern setFeatureCompatibilityVersion
      setUserWriteBlockMode setIndexCommitQuorum logRotate rotateCertificates rotateFTDC compact autoCompact
      killOp clearLog profile setProfilingFilterGlobally logApplicationMessage logMessage
      getAuditConfig setAuditConfig startTrafficRecording stopTrafficRecording getTrafficRecordingStatus
      releaseMemory dbCheck setChangeStreamState getChangeStreamState listDatabasesForAllTenants
      validateDBMetadata`),
  },
  {
    rule: 'command.query-tuning',
    reason: "query settings and plan-cache filters apply to every tenant's queries (catalogue 26)",
    names: words(`planCacheClear planCacheClearFilters planCacheListFilters planCacheSetFilter setQuerySettings
      removeQuerySettings`),
  },
  {
    rule: 'command.diagnostic',
    reason: "diagnostic output describes the shared server and other tenants' work (catalogue 26)",
    names: words(`lockInfo whatsmysni getDiagnosticData features connPoolStats
      netstat dbHash dbhash echo _mongotConnPoolStats`),
  },
  {
    rule: 'command.stats',
    reason: "statistics include every tenant's data (catalogue 25, 59)",
    names: words('collStats collstats dbStats dbstats dataSize datasize validate'),
  },
  {
    rule: 'command.ddl',
    reason: 'this DDL rewrites or copies whole collections shared by every tenant (catalogue 23)',
    names: words(`convertToCapped cloneCollectionAsCapped reIndex createSearchIndexes updateSearchIndex dropSearchIndex
      listSearchIndexes exportCollection importCollection voteCommitImportCollection
      internalRenameIfOptionsAndIndexesMatch`),
  },
  {
    rule: 'command.unsupported',
    reason: 'not supported through the proxy',
    names:
      words(`filemd5 compactStructuredEncryptionData cleanupStructuredEncryptionData getQueryableEncryptionCountInfo
      analyze handshake`),
  },
  {
    rule: 'command.internal',
    reason: 'internal or test-only server command',
    names: words(`_clusterQueryWithoutShardKey _clusterWriteWithoutShardKey _dropConnectionsToMongot _flushShardRegistry
      _hashBSONElement _isSelf _killOperations _mergeAuthzCollections _addShard _cloneCollectionOptionsFromPrimaryShard
      _configsvrAbortReshardCollection _configsvrAddShard _configsvrAddShardToZone _configsvrBalancerCollectionStatus
      _configsvrBalancerStart _configsvrBalancerStatus _configsvrBalancerStop _configsvrCleanupReshardCollection
      _configsvrClearJumboFlag _configsvrCollMod _configsvrCommitChunkMigration _configsvrCommitChunkSplit
      _configsvrCommitChunksMerge _configsvrCommitIndex _configsvrCommitMovePrimary _configsvrCommitReshardCollection
      _configsvrConfigureCollectionBalancing _configsvrCreateDatabase _configsvrDropIndexCatalogEntry
      _configsvrEnsureChunkVersionIsGreaterThan _configsvrMoveRange _configsvrRefineCollectionShardKey
      _configsvrRemoveChunks _configsvrRemoveShard _configsvrRemoveShardFromZone _configsvrRemoveTags
      _configsvrRenameCollectionMetadata _configsvrRepairShardedCollectionChunksHistory _configsvrReshardCollection
      _configsvrRunRestore _configsvrSetAllowMigrations _configsvrSetClusterParameter _configsvrSetUserWriteBlockMode
      _configsvrUpdateZoneKeyRange _flushDatabaseCacheUpdates _flushDatabaseCacheUpdatesWithWriteConcern
      _flushReshardingStateChange _flushRoutingTableCacheUpdates _flushRoutingTableCacheUpdatesWithWriteConcern
      _getAuditConfigGeneration _getNextSessionMods _getUserCacheGeneration _migrateClone _recvChunkAbort
      _recvChunkCommit _recvChunkReleaseCritSec _recvChunkStart _recvChunkStatus _shardsvrAbortReshardCollection
      _shardsvrCleanupReshardCollection _shardsvrCloneCatalogData _shardsvrCollMod _shardsvrCollModParticipant
      _shardsvrCommitIndexParticipant _shardsvrCommitReshardCollection _shardsvrCompactStructuredEncryptionData
      _shardsvrCreateCollection _shardsvrCreateCollectionParticipant _shardsvrDropCollection
      _shardsvrDropCollectionIfUUIDNotMatching _shardsvrDropCollectionParticipant _shardsvrDropDatabase
      _shardsvrDropDatabaseParticipant _shardsvrDropIndexCatalogEntryParticipant _shardsvrDropIndexes
      _shardsvrGetStatsForBalancing _shardsvrJoinMigrations _shardsvrMovePrimary _shardsvrMoveRange
      _shardsvrParticipantBlock _shardsvrRefineCollectionShardKey _shardsvrRegisterIndex _shardsvrRenameCollection
      _shardsvrRenameCollectionParticipant _shardsvrRenameCollectionParticipantUnblock _shardsvrReshardCollection
      _shardsvrReshardingOperationTime _shardsvrSetAllowMigrations _shardsvrSetClusterParameter
      _shardsvrSetUserWriteBlockMode _shardsvrUnregisterIndex _transferMods _vectorClockPersist
      clusterAbortTransaction clusterAggregate clusterCommitTransaction clusterDelete clusterFind clusterGetMore
      clusterInsert clusterUpdate coordinateCommitTransaction prepareTransaction refreshSessionsInternal
      voteCommitIndexBuild pinHistoryReplicated setCommittedSnapshot makeSnapshot replicateSearchIndexCommand
      upgradeDowngradeViewlessTimeseries configureFailPoint waitForFailPoint cpuload sleep sbe godinsert captrunc
      emptycapped forceerror stageDebug httpClientRequest driverOIDTest testDeprecation testDeprecationInVersion2
      testInternalTransactions testRemoval testVersion2 testVersions1And2`),
  },
];

const UNKNOWN: CommandClass = Object.freeze({
  kind: 'refuse',
  rule: 'command.unknown',
  reason: 'not a command the proxy knows (deny by default, catalogue G1)',
});

function buildTable(): ReadonlyMap<string, CommandClass> {
  const table = new Map<string, CommandClass>();
  const add = (name: string, cls: CommandClass): void => {
    if (table.has(name)) throw new Error(`command ${name} is classified twice`);
    table.set(name, cls);
  };
  const local: CommandClass = Object.freeze({ kind: 'local' });
  for (const name of LOCAL_COMMANDS) add(name, local);
  for (const [name, handler] of REWRITTEN_COMMANDS) add(name, Object.freeze({ kind: 'rewrite', handler }));
  for (const group of REFUSAL_GROUPS) {
    const cls: CommandClass = Object.freeze({ kind: 'refuse', rule: group.rule, reason: group.reason });
    for (const name of group.names) add(name, cls);
  }
  return table;
}

const TABLE = buildTable();

/** Every command name with an explicit classification. */
export const CLASSIFIED_COMMANDS: readonly string[] = Object.freeze([...TABLE.keys()]);

/**
 * The classification of a command name (the first key of the body, compared exactly).
 * Unknown names, including other spellings of known ones, are refused as `command.unknown`.
 */
export function classify(name: string): CommandClass {
  return TABLE.get(name) ?? UNKNOWN;
}

/**
 * The refusal to throw for a refused class: CommandNotFound for unknown names and for commands
 * current servers no longer have (what such a server answers), Unauthorized for the rest, which
 * are forbidden.
 */
export function refusalFor(name: string, cls: Extract<CommandClass, { kind: 'refuse' }>): PolicyRefusal {
  const notFound = cls.rule === 'command.unknown' || cls.rule === 'command.removed';
  const code = notFound ? ErrorCodes.CommandNotFound : ErrorCodes.Unauthorized;
  return new PolicyRefusal(cls.rule, `command ${quoteName(name)}: ${cls.reason}`, code);
}

/** Commands `explain` may wrap (catalogue 21); the inner command is rewritten by its own handler. */
export const EXPLAINABLE: ReadonlySet<HandlerName> = new Set<HandlerName>([
  'find',
  'count',
  'distinct',
  'aggregate',
  'update',
  'delete',
  'findAndModify',
]);

// ---------------------------------------------------------------------------------------------
// Top-level fields (catalogue G1, 53).

/**
 * Fields every command may carry. `maxTimeMS` is not here: it is listed per command (the engine
 * caps it, catalogue 15).
 */
export const GENERIC_FIELDS: ReadonlySet<string> = new Set([
  '$db',
  'lsid',
  'txnNumber',
  'autocommit',
  'startTransaction',
  '$clusterTime',
  '$readPreference',
  'readConcern',
  'writeConcern',
  'comment',
  'apiVersion',
  'apiStrict',
  'apiDeprecationErrors',
]);

/**
 * Fields refused with their own rule wherever they appear: server-internal fields (catalogue 53,
 * 43) and options that defeat a defence (catalogue 17, 22).
 */
export const REFUSED_FIELDS: ReadonlyMap<string, { rule: string; reason: string }> = new Map([
  ['$tenant', { rule: 'field.internal', reason: 'internal multitenancy field' }],
  ['$audit', { rule: 'field.internal', reason: 'internal field' }],
  ['$client', { rule: 'field.internal', reason: 'internal field' }],
  ['$configServerState', { rule: 'field.internal', reason: 'internal field' }],
  ['$configTime', { rule: 'field.internal', reason: 'internal field' }],
  ['$topologyTime', { rule: 'field.internal', reason: 'internal field' }],
  ['$replData', { rule: 'field.internal', reason: 'internal field' }],
  ['$oplogQueryData', { rule: 'field.internal', reason: 'internal field' }],
  ['$queryOptions', { rule: 'field.internal', reason: 'legacy mongos field' }],
  ['mayBypassWriteBlocking', { rule: 'field.internal', reason: 'internal field' }],
  ['rawData', { rule: 'field.internal', reason: 'addresses raw time-series buckets (catalogue 43)' }],
  ['maxTimeMSOpOnly', { rule: 'field.internal', reason: 'internal field' }],
  ['clientOperationKey', { rule: 'field.internal', reason: 'internal field' }],
  ['databaseVersion', { rule: 'field.internal', reason: 'internal sharding field' }],
  ['shardVersion', { rule: 'field.internal', reason: 'internal sharding field' }],
  ['stmtId', { rule: 'field.internal', reason: 'internal field' }],
  ['stmtIds', { rule: 'field.internal', reason: 'internal field' }],
  [
    'bypassDocumentValidation',
    { rule: 'field.bypass-validation', reason: 'bypasses the tenant validator (catalogue 18, 43)' },
  ],
  ['noCursorTimeout', { rule: 'find.no-cursor-timeout', reason: 'cursors must time out (catalogue 17)' }],
  ['oplogReplay', { rule: 'find.oplog-replay', reason: 'oplog replay is not allowed (catalogue 17)' }],
  ['viewOn', { rule: 'command.view', reason: 'views run their pipeline before the tenant filter (catalogue 22)' }],
]);

const set = (...names: string[]): ReadonlySet<string> => new Set(names);

/**
 * Refused fields whose "off" value changes nothing, by the handlers the server accepts them on:
 * `bypassDocumentValidation: false` validates as usual, `noCursorTimeout: false` lets the cursor
 * time out, `oplogReplay: false` is the default (drivers and ODMs send these explicitly).
 */
const HARMLESS_WHEN_FALSE: ReadonlyMap<string, ReadonlySet<HandlerName>> = new Map([
  [
    'bypassDocumentValidation',
    new Set<HandlerName>(['insert', 'update', 'delete', 'findAndModify', 'aggregate', 'bulkWrite']),
  ],
  ['noCursorTimeout', new Set<HandlerName>(['find'])],
  ['oplogReplay', new Set<HandlerName>(['find'])],
]);

/** `false`, or a number equal to 0 (the server reads these flags as booleans). */
function isOff(value: RawValue): boolean {
  if (value.type === BsonType.boolean) return value.value[0] === 0;
  return numberOf(value) === 0;
}

/** Top-level fields of each rewritten command besides the command name and GENERIC_FIELDS (manual pages). */
export const ALLOWED_FIELDS: Readonly<Record<HandlerName, ReadonlySet<string>>> = {
  find: set(
    'filter',
    'projection',
    'sort',
    'hint',
    'skip',
    'limit',
    'batchSize',
    'singleBatch',
    'let',
    'collation',
    'min',
    'max',
    'returnKey',
    'showRecordId',
    'tailable',
    'awaitData',
    'allowPartialResults',
    'allowDiskUse',
    'maxTimeMS',
  ),
  count: set('query', 'limit', 'skip', 'hint', 'collation', 'maxTimeMS'),
  distinct: set('key', 'query', 'collation', 'hint', 'maxTimeMS'),
  aggregate: set('pipeline', 'explain', 'allowDiskUse', 'cursor', 'collation', 'hint', 'let', 'maxTimeMS'),
  explain: set('verbosity', 'maxTimeMS'),
  listIndexes: set('cursor', 'maxTimeMS'),
  listCollections: set('filter', 'nameOnly', 'authorizedCollections', 'cursor', 'maxTimeMS'),
  // bypassEmptyTsReplacement (mongorestore): a zero Timestamp in the tenant's own document is
  // stored as sent instead of the server's clock; it touches nothing but that document.
  insert: set('documents', 'ordered', 'bypassEmptyTsReplacement', 'maxTimeMS'),
  update: set('updates', 'ordered', 'let', 'bypassEmptyTsReplacement', 'maxTimeMS'),
  delete: set('deletes', 'ordered', 'let', 'maxTimeMS'),
  findAndModify: set(
    'query',
    'sort',
    'remove',
    'update',
    'new',
    'fields',
    'upsert',
    'arrayFilters',
    'collation',
    'hint',
    'let',
    'bypassEmptyTsReplacement',
    'maxTimeMS',
  ),
  bulkWrite: set('ops', 'nsInfo', 'ordered', 'let', 'errorsOnly', 'cursor', 'maxTimeMS'),
  getMore: set('collection', 'batchSize', 'maxTimeMS'),
  killCursors: set('cursors', 'maxTimeMS'),
  create: set(
    'capped',
    'size',
    'max',
    'timeseries',
    'expireAfterSeconds',
    'clusteredIndex',
    'changeStreamPreAndPostImages',
    'storageEngine',
    'validator',
    'validationLevel',
    'validationAction',
    'indexOptionDefaults',
    'collation',
    'encryptedFields',
    'idIndex',
    'maxTimeMS',
  ),
  // ignoreUnknownIndexOptions (mongorestore): harmless, the proxy checks every index option itself
  // and still refuses one it does not know (ddl.index-unknown-field).
  createIndexes: set('indexes', 'commitQuorum', 'ignoreUnknownIndexOptions', 'maxTimeMS'),
  dropIndexes: set('index', 'maxTimeMS'),
  drop: set('maxTimeMS'),
  dropDatabase: set('maxTimeMS'),
  listDatabases: set('filter', 'nameOnly', 'authorizedDatabases', 'maxTimeMS'),
  collMod: set(
    'index',
    'validator',
    'validationLevel',
    'validationAction',
    'expireAfterSeconds',
    'changeStreamPreAndPostImages',
    'cappedSize',
    'cappedMax',
    'timeseries',
    'dryRun',
    'maxTimeMS',
  ),
  renameCollection: set('to', 'dropTarget', 'maxTimeMS'),
  // maxTimeMS is a generic argument: harmless on commands that do no work.
  endSessions: set('maxTimeMS'),
  killSessions: set('maxTimeMS'),
  commitTransaction: set('recoveryToken', 'maxTimeMS'),
  abortTransaction: set('recoveryToken', 'maxTimeMS'),
  refreshSessions: set('maxTimeMS'),
  startSession: set('maxTimeMS'),
  ping: set('maxTimeMS'),
  buildInfo: set('maxTimeMS'),
  atlasVersion: set('maxTimeMS'),
  getDefaultRWConcern: set('inMemory', 'maxTimeMS'),
  // Answered by the proxy (ANSWERED_LOCALLY): their options select what to show, nothing is forwarded.
  serverStatus: set(),
  hostInfo: set(),
  getCmdLineOpts: set(),
  getParameter: set(),
  getLog: set(),
  currentOp: set(),
  top: set(),
  listCommands: set(),
  whatsmyuri: set(),
  getFreeMonitoringStatus: set(),
};

/**
 * Handlers the proxy answers itself from what every tenant may see: any option field is
 * accepted (serverStatus section switches, getParameter names, currentOp filters), since none is
 * forwarded or evaluated.
 */
const ANSWERED_LOCALLY: ReadonlySet<HandlerName> = new Set<HandlerName>([
  'serverStatus',
  'hostInfo',
  'getCmdLineOpts',
  'getParameter',
  'getLog',
  'currentOp',
  'top',
  'listCommands',
  'whatsmyuri',
  'getFreeMonitoringStatus',
  'startSession',
]);

/** A field name for a message: quoted, escaped, bounded (names are client input). */
function quoteName(name: string): string {
  const shown = name.length > 64 ? `${name.slice(0, 64)}…` : name;
  return JSON.stringify(shown);
}

/**
 * Throws PolicyRefusal unless every top-level field of `body` after the command name is allowed
 * for `handler`: `field.unknown` names the field; internal and defence-defeating fields get their
 * own rule (REFUSED_FIELDS); a repeated field is `field.duplicate` (G3); a generic argument of a
 * type the server refuses is refused as the server would (generic-arguments.ts).
 */
export function assertAllowedFields(handler: HandlerName, body: RawDocument): void {
  const allowed = ALLOWED_FIELDS[handler];
  const seen = new Set<string>();
  body.elements.forEach((element, index) => {
    const name = element.name;
    if (seen.has(name)) {
      throw new PolicyRefusal(
        'field.duplicate',
        `field ${quoteName(name)} appears more than once (catalogue G3)`,
        ErrorCodes.BadValue,
      );
    }
    seen.add(name);
    if (index === 0) return; // the command name itself
    const refused = REFUSED_FIELDS.get(name);
    if (refused !== undefined && HARMLESS_WHEN_FALSE.get(name)?.has(handler) === true && isOff(element)) return;
    if (refused !== undefined) {
      throw new PolicyRefusal(refused.rule, `field ${quoteName(name)} is not allowed on ${handler}: ${refused.reason}`);
    }
    if (GENERIC_FIELDS.has(name)) {
      // Typed as the server parses them, never forwarded mistyped (issue 15).
      if (!ANSWERED_LOCALLY.has(handler)) assertGenericArgument(name, element);
      return;
    }
    if (allowed.has(name) || ANSWERED_LOCALLY.has(handler)) return;
    // The server: "BSON field '<command>.<field>' is an unknown field." (40415).
    throw new PolicyRefusal(
      'field.unknown',
      `field ${quoteName(name)} is not allowed on ${handler} (catalogue G1, 53)`,
      ErrorCodes.Location40415,
    );
  });
}
