/**
 * Operator allowlists (catalogue G1, 1, 2, 11, 16, 37). Names follow the manual's operator
 * reference (mongodb/docs `reference/operator/query`, `reference/operator/aggregation`,
 * `reference/operator/update`, `reference/operator/projection`). Every `$` name not listed for
 * its context is refused; the JavaScript operators are refused everywhere.
 */

const names = (text: string): ReadonlySet<string> => new Set(text.split(/\s+/).filter((word) => word.length > 0));

/** Keys refused anywhere in any document a client sends (catalogue 1, 2). */
export const FORBIDDEN_KEYS: ReadonlySet<string> = names('$where $function $accumulator');

/** Variables refused anywhere (catalogue 11: `$$USER_ROLES` exposes the proxy user's roles). */
export const FORBIDDEN_VARIABLES: readonly string[] = ['$$USER_ROLES'];

/** Query operators that apply to a field (`{field: {$op: …}}`). */
export const FIELD_QUERY_OPERATORS: ReadonlySet<string> = names(`
  $eq $ne $gt $gte $lt $lte $in $nin $not $exists $type $mod $regex $options $all $elemMatch $size
  $bitsAllClear $bitsAllSet $bitsAnyClear $bitsAnySet
  $geoWithin $geoIntersects $near $nearSphere $maxDistance $minDistance $geometry $box $center $centerSphere
  $polygon $uniqueDocs
`);

/** Query operators that stand at the level of a filter document (`{$op: …}`). */
export const TOP_LEVEL_QUERY_OPERATORS: ReadonlySet<string> = names(`
  $and $or $nor $expr $jsonSchema $text $comment $sampleRate
`);

/** Every query operator (filter context), for reference. */
export const QUERY_OPERATORS: ReadonlySet<string> = new Set([...FIELD_QUERY_OPERATORS, ...TOP_LEVEL_QUERY_OPERATORS]);

/** Fields of a `$text` operator. */
export const TEXT_FIELDS: ReadonlySet<string> = names('$search $language $caseSensitive $diacriticSensitive');

/** Operators inside `$near` / `$nearSphere` / `$geoWithin` / `$geoIntersects` values. */
export const GEO_OPERATORS: ReadonlySet<string> = names(
  '$geometry $maxDistance $minDistance $box $center $centerSphere $polygon $uniqueDocs',
);

/** Accumulators of `$group` (and `$bucket`, `$bucketAuto`). `$accumulator` is refused. */
export const ACCUMULATORS: ReadonlySet<string> = names(`
  $addToSet $avg $bottom $bottomN $count $first $firstN $last $lastN $max $maxN $median $mergeObjects $min
  $minN $percentile $push $stdDevPop $stdDevSamp $sum $top $topN $concatArrays $setUnion
`);

/** Window operators of `$setWindowFields` (besides the accumulators). */
export const WINDOW_OPERATORS: ReadonlySet<string> = new Set([
  ...ACCUMULATORS,
  ...names(`
    $covariancePop $covarianceSamp $denseRank $derivative $documentNumber $expMovingAvg $integral $linearFill
    $locf $minMaxScaler $rank $shift
  `),
]);

/**
 * Aggregation expression operators (also `$expr`, update pipelines, find projections), from the
 * manual's Expressions page (reference/operator/aggregation), 8.x. `$function` is refused.
 */
export const EXPRESSION_OPERATORS: ReadonlySet<string> = names(`
  $abs $add $ceil $divide $exp $floor $ln $log $log10 $mod $multiply $pow $round $sqrt $subtract $trunc $sigmoid
  $arrayElemAt $arrayToObject $concatArrays $filter $first $firstN $in $indexOfArray $isArray $last $lastN $map
  $maxN $minN $objectToArray $range $reduce $reverseArray $size $slice $sortArray $zip
  $bitAnd $bitNot $bitOr $bitXor
  $and $not $or
  $cmp $eq $gt $gte $lt $lte $ne
  $cond $ifNull $switch
  $binarySize $bsonSize
  $dateAdd $dateDiff $dateFromParts $dateFromString $dateSubtract $dateToParts $dateToString $dateTrunc
  $dayOfMonth $dayOfWeek $dayOfYear $hour $isoDayOfWeek $isoWeek $isoWeekYear $millisecond $minute $month
  $second $toDate $week $year
  $literal
  $createObjectId $getField $hash $hexHash $rand $sampleRate $toHashedIndexKey
  $mergeObjects $setField $unsetField
  $allElementsTrue $anyElementTrue $setDifference $setEquals $setIntersection $setIsSubset $setUnion
  $concat $indexOfBytes $indexOfCP $ltrim $regexFind $regexFindAll $regexMatch $replaceOne $replaceAll $rtrim
  $split $strLenBytes $strLenCP $strcasecmp $substr $substrBytes $substrCP $toLower $toString $trim $toUpper
  $meta
  $tsIncrement $tsSecond
  $sin $cos $tan $asin $acos $atan $atan2 $asinh $acosh $atanh $sinh $cosh $tanh $degreesToRadians
  $radiansToDegrees
  $convert $isNumber $toArray $toBool $toDecimal $toDouble $toInt $toLong $toObject $toObjectId $toUUID $type
  $encStrContains $encStrEndsWith $encStrNormalizedEq $encStrStartsWith
  $similarityCosine $similarityDotProduct $similarityEuclidean
  $avg $max $min $stdDevPop $stdDevSamp $sum $median $percentile
  $let
`);

/** Update operators (catalogue 37). */
export const UPDATE_OPERATORS: ReadonlySet<string> = names(`
  $currentDate $inc $min $max $mul $rename $set $setOnInsert $unset
  $addToSet $pop $pull $push $pullAll $bit
`);

/** Modifiers inside `$push` / `$addToSet` values. */
export const UPDATE_MODIFIERS: ReadonlySet<string> = names('$each $position $slice $sort');

/** Projection operators of find (besides expressions). */
export const PROJECTION_OPERATORS: ReadonlySet<string> = names('$elemMatch $slice $meta');

/** Fields of a collation document (manual: reference/collation). */
export const COLLATION_FIELDS: ReadonlySet<string> = names(
  'locale caseLevel caseFirst strength numericOrdering alternate maxVariable backwards normalization',
);
