/**
 * MongoDB command names that may appear as the `command` label of operation metrics. The
 * command name comes from the client, so the label is limited to this fixed list (anything
 * else is counted as `other`) to keep the number of time series bounded.
 *
 * Names are case-sensitive, as the server matches them; the legacy lower-case aliases the
 * server still accepts are listed too.
 */
export const KNOWN_COMMANDS: ReadonlySet<string> = new Set([
  // Handshake, connection and diagnostics
  'hello', 'isMaster', 'ismaster', 'ping', 'buildInfo', 'buildinfo', 'hostInfo', 'whatsmyuri',
  'connectionStatus', 'serverStatus', 'getCmdLineOpts', 'getParameter', 'setParameter', 'getLog',
  'clearLog', 'listCommands', 'features', 'getDiagnosticData', 'lockInfo', 'connPoolStats',
  'shardConnPoolStats', 'netstat', 'top', 'currentOp', 'killOp', 'profile', 'dbHash', 'driverOIDTest',
  'getDefaultRWConcern', 'setDefaultRWConcern', 'getClusterParameter', 'setClusterParameter',
  'logApplicationMessage', 'setProfilingFilterGlobally', 'getFreeMonitoringStatus', 'setFreeMonitoring',
  'getnonce', 'availableQueryOptions', 'getAuditConfig', 'setAuditConfig', 'rotateCertificates',
  'startRecordingTraffic', 'stopRecordingTraffic', 'getQueryableEncryptionCountInfo',
  // Authentication
  'saslStart', 'saslContinue', 'authenticate', 'logout',
  // CRUD and queries
  'find', 'getMore', 'killCursors', 'insert', 'update', 'delete', 'findAndModify', 'findandmodify',
  'aggregate', 'count', 'distinct', 'mapReduce', 'mapreduce', 'explain', 'bulkWrite', 'geoSearch',
  'geoNear', 'filemd5', 'releaseMemory',
  // Sessions and transactions
  'startSession', 'endSessions', 'refreshSessions', 'killSessions', 'killAllSessions',
  'killAllSessionsByPattern', 'commitTransaction', 'abortTransaction',
  // Collections, views, indexes and databases
  'create', 'drop', 'dropDatabase', 'listCollections', 'listDatabases', 'listIndexes', 'createIndexes',
  'dropIndexes', 'deleteIndexes', 'reIndex', 'renameCollection', 'collMod', 'convertToCapped',
  'cloneCollectionAsCapped', 'collStats', 'dbStats', 'dataSize', 'validate', 'validateDBMetadata',
  'compact', 'compactStructuredEncryptionData', 'cleanupStructuredEncryptionData', 'autoCompact',
  'setIndexCommitQuorum', 'createSearchIndexes', 'dropSearchIndex', 'updateSearchIndex',
  'listSearchIndexes', 'planCacheClear', 'planCacheClearFilters', 'planCacheListFilters',
  'planCacheSetFilter', 'analyze', 'checkMetadataConsistency', 'getLastError', 'getPrevError',
  'resetError', 'fsync', 'fsyncUnlock', 'logRotate', 'shutdown', 'setFeatureCompatibilityVersion',
  'setUserWriteBlockMode', 'dropConnections',
  // Users and roles
  'createUser', 'updateUser', 'dropUser', 'dropAllUsersFromDatabase', 'usersInfo', 'grantRolesToUser',
  'revokeRolesFromUser', 'createRole', 'updateRole', 'dropRole', 'dropAllRolesFromDatabase', 'rolesInfo',
  'grantPrivilegesToRole', 'revokePrivilegesFromRole', 'grantRolesToRole', 'revokeRolesFromRole',
  'invalidateUserCache', '_getUserCacheGeneration',
  // Replication
  'replSetGetStatus', 'replSetGetConfig', 'replSetInitiate', 'replSetReconfig', 'replSetStepDown',
  'replSetStepUp', 'replSetFreeze', 'replSetMaintenance', 'replSetSyncFrom', 'replSetResizeOplog',
  'replSetAbortPrimaryCatchUp', 'replSetHeartbeat', 'replSetUpdatePosition', 'replSetRequestVotes',
  'appendOplogNote', 'applyOps', 'getShardVersion', 'isdbgrid',
  // Sharding
  'enableSharding', 'shardCollection', 'reshardCollection', 'refineCollectionShardKey',
  'unshardCollection', 'moveCollection', 'abortReshardCollection', 'commitReshardCollection',
  'cleanupReshardCollection', 'abortMoveCollection', 'abortUnshardCollection', 'addShard', 'removeShard',
  'listShards', 'addShardToZone', 'removeShardFromZone', 'updateZoneKeyRange', 'balancerStart',
  'balancerStop', 'balancerStatus', 'balancerCollectionStatus', 'configureCollectionBalancing',
  'moveChunk', 'moveRange', 'splitChunk', 'split', 'splitVector', 'mergeChunks', 'mergeAllChunksOnShard',
  'movePrimary', 'clearJumboFlag', 'cleanupOrphaned', 'checkShardingIndex', 'flushRouterConfig',
  'getShardMap', 'shardingState', 'analyzeShardKey', 'configureQueryAnalyzer',
  'transitionToDedicatedConfigServer', 'transitionFromDedicatedConfigServer', 'setAllowMigrations',
  'startShardDraining', 'stopShardDraining', 'shardDrainingStatus', 'commitShardRemoval',
  // Change streams (serverless)
  'getChangeStreamState', 'setChangeStreamState',
]);

/** The label for a command name: itself when known, otherwise `other`. */
export function commandLabel(name: string): string {
  return KNOWN_COMMANDS.has(name) ? name : 'other';
}
