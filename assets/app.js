/* pointsd cashier page.
 *
 * Plain JavaScript, no build step, no external hosts. Written for current Chromium and Firefox
 * and for Safari on iPads a few years old: no optional chaining, no `??`, no
 * crypto.randomUUID (missing on older Safari and on plain-http pages), no innerHTML (every
 * text goes in with textContent). It uses only the public local API under /v1, plus the
 * non-secret /page/config.json. The register token is kept in localStorage and sent only as
 * `Authorization: Bearer`, never in a URL.
 */
(function () {
  'use strict';

  var LS_TOKEN = 'pointsd.token';
  var LS_LANG = 'pointsd.lang';
  var LS_REGISTER = 'pointsd.register';
  var LS_SLIP_WIDTH = 'pointsd.slipWidth';
  var SS_PENDING = 'pointsd.pending.';
  var POLL_MS = 2000;

  /* ------------------------------------------------------------------ texts */

  var TEXTS = {
    ja: {
      app_title: 'ポイント',
      sign_in: 'サインイン',
      sign_out: 'サインアウト',
      signin_title: 'このレジをサインイン',
      signin_help: '店舗の管理者から受け取ったレジ用トークンを入力してください。この端末に保存されるので、入力は一度だけです。',
      token_label: 'レジのトークン',
      register_label: 'レジ ID (取引に記録されます)',
      register_help: 'この端末の取引を見分けるための名前です。わからなければそのままで構いません。',
      err_token_empty: 'トークンを入力してください。',
      err_token_bad: 'このトークンは受け付けられませんでした。入力し直すか、店舗の管理者に確認してください。',
      err_token_revoked: 'このトークンは使えなくなりました。もう一度サインインしてください。',
      err_register_id: 'レジ ID は空白なしの半角英数字・記号 64 文字以内で入力してください。',
      signed_out: 'サインアウトしました。',
      conn_online: 'オンライン',
      conn_offline: 'オフライン',
      conn_unreachable: '接続なし',
      lookup_label: '会員番号・会員コード・バーコード',
      lookup_button: '検索',
      lookup_empty: '会員番号か会員コードを入力するか、カードをスキャンしてください。',
      available: '利用可能ポイント',
      pt: 'pt',
      confirmed: '確定分',
      pending: '同期待ち分',
      expires: '有効期限',
      as_of: '残高の時点',
      no_expiry: 'なし',
      never: '未確認',
      ids: '顧客 ID {id}',
      ids_code: '顧客 ID {id} · 会員コード {code}',
      no_name: '(名前なし)',
      stale_hint: 'この残高は {time} 時点のもので、最新でない可能性があります。',
      stale_never: 'この残高はまだ本部で確認されていません。',
      expired_hint: '有効期限切れ: オフライン中は確定分のポイントを利用できません。',
      expiry_on: 'ポイントは {date} に失効します。',
      expiry_soon: 'ポイントは {date} に失効します(あと {days} 日)。',
      expiry_moves: 'easyPoints の有効期限: お買い物やポイント付与があると、約 {months} か月後に延びます。',
      local_only: 'オフライン中に登録された顧客です。本部ではまだ確認されていません。',
      earn_title: 'ポイント付与',
      earn_mode: '付与方法',
      earn_by_amount: 'お買い上げ金額',
      earn_by_points: 'ポイント数',
      earn_amount_label: 'お買い上げ金額 (円)',
      earn_points_label: '付与するポイント',
      earn_preview: '{amount} 円 → {points} pt 付与',
      earn_rule: '{yen} 円ごとに 1 pt',
      earn_submit: '付与する',
      earn_submit_n: '{points} pt 付与する',
      redeem_title: 'ポイント利用',
      redeem_label: '利用するポイント',
      redeem_hint: '{n} pt まで利用できます。',
      redeem_hint_offline: 'オフライン中: 1 回 {limit} pt まで、{n} pt まで利用できます。',
      redeem_disabled_offline: 'オフライン中はポイントを利用できません (店舗の設定)。',
      redeem_submit: '利用する',
      redeem_submit_n: '{points} pt 利用する',
      working: '処理中…',
      result_confirmed: '確定しました',
      result_queued: '保存しました — 同期待ち',
      result_rejected: '本部が拒否しました — 反映されていません',
      result_synced: 'この取引は本部に送られ、確定しました。',
      result_earn: '{name} 様に {points} pt を付与しました。残高 {balance} pt。',
      result_redeem: '{name} 様が {points} pt を利用しました。残高 {balance} pt。',
      result_queued_help: 'この店舗の PC に保存済みです。回線が戻ると自動で本部に送られます。',
      recent_title: 'このレジの最近の取引',
      recent_empty: 'まだ取引はありません。',
      col_time: '時刻',
      col_customer: '顧客',
      col_kind: '種類',
      col_points: 'ポイント',
      col_state: '状態',
      kind_earn: '付与',
      kind_redeem: '利用',
      kind_adjust: '調整',
      state_pending: '同期待ち',
      state_sending: '送信中',
      state_ambiguous: '確認中',
      state_applied: '確定',
      state_rejected: '拒否',
      state_needs_review: '要確認',
      state_discarded: '取消',
      review_title: '確認待ちの取引 (マネージャー)',
      review_help: '本部に届いたか確かめられなかった取引です。スマレジで顧客のポイントを確認してから判断してください。',
      review_empty: '確認待ちの取引はありません。',
      review_what: '{time} · 顧客 {customer} · {kind} {points} pt · {register}',
      review_evidence: '送信前 {before} pt → 反映なら {expected} pt / 読み戻し {after} pt',
      review_note: '判断の理由 (必須)',
      review_applied: '反映済みとする',
      review_resend: '再送する',
      review_discard: '取り消す',
      review_need_note: '判断の理由を入力してください。',
      review_done: '{txn} を「{action}」として処理しました。',
      banner_offline: 'オフライン — 残高は {time} 時点のものです。同期待ちの取引 {n} 件',
      banner_syncing: 'オンラインに戻りました — 同期中の取引 {n} 件',
      banner_unreachable: 'この端末から pointsd に接続できません — 端末のネットワークを確認してください。',
      footer: '店舗 {store} · レジ {register} · pointsd {version}',
      footer_granting: 'ポイント付与: {by}',
      granted_by_register: 'スマレジのレジ',
      granted_by_pointsd: 'pointsd',
      field_points: 'ポイント',
      field_purchase_amount: '金額',
      field_customer_id: '顧客',
      field_q: '検索語',
      field_note: '理由',
      field_txn_id: '取引番号',
      field_register_id: 'レジ ID',
      err_positive: '1 以上の整数を入力してください。',
      err_zero_points: 'この金額では付与されるポイントが 0 です。',
      err_too_big: '数が大きすぎます。',
      err_network: 'pointsd に接続できませんでした。もう一度押してください (二重には記録されません)。',
      err_network_read: 'pointsd に接続できませんでした。もう一度お試しください。',
      err_generic: '処理できませんでした (HTTP {status})。',
      code_insufficient_points: 'ポイントが足りません。利用できるのは {n} pt までです。',
      code_insufficient_points_plain: 'ポイントが足りません。残高を確認してください。',
      code_offline_redeem_limit: 'オフライン中は 1 回に {limit} pt までしか利用できません。',
      code_offline_redeem_disabled: 'オフライン中はポイントを利用できません。回線が戻ってからもう一度お試しください。',
      code_upstream_rejected: '本部 (スマレジ) がこの取引を拒否したため、反映されていません。ポイントの有効期限切れなどが考えられます。',
      code_not_found: '該当する顧客が見つかりません。番号を確認するか、もう一度スキャンしてください。',
      code_not_found_txn: '該当する取引が見つかりません。',
      code_validation: '入力内容を確認してください: {fields}',
      code_unauthorized: 'このトークンは使えなくなりました。もう一度サインインしてください。',
      code_forbidden: 'この操作にはマネージャーのトークンが必要です。',
      code_storage_full: '店舗の PC のディスクがいっぱいで、保存できませんでした (何も記録されていません)。空き容量を作ってから、もう一度押してください。',
      code_storage_error: '保存できませんでした (何も記録されていません)。もう一度押してください。',
      code_idempotency_conflict: 'この取引番号はすでに別の内容で使われています。もう一度押すと新しい取引として送られます。',
      code_upstream_unavailable: '本部 (スマレジ) に接続できません。しばらくしてからお試しください。',
      code_not_resolvable: 'この取引はすでに処理されています。',
      sale_title: 'お会計 (ポイント利用・付与)',
      sale_amount_label: 'お会計金額 (円・税込)',
      sale_use_label: '利用するポイント',
      sale_use_all: '全部使う',
      sale_use_hint: 'この会計で {n} pt まで利用できます。',
      sale_use_hint_none: 'この会計ではポイントを利用できません。',
      sale_use_hint_start: '金額を入力すると、利用できるポイントと獲得ポイントが表示されます。',
      sale_receipt_label: 'レシート番号 (任意・返品のときに使います)',
      sale_pv_used: '利用',
      sale_pv_earned: '獲得',
      sale_pv_net: '差引',
      sale_pv_after: '会計後の残高',
      sale_rules: '計算: {rules}',
      sale_submit: '会計を確定する',
      sale_submit_n: '{amount} 円の会計を確定する',
      sale_amount_first: '先にお会計金額を入力してください。',
      err_receipt: 'レシート番号は空白なしの半角英数字・記号 64 文字以内で入力してください。',
      result_sale: '{name} 様: {amount} 円のお会計で {used} pt 利用、{earned} pt 獲得。残高 {balance} pt。取引番号 {sale}',
      return_title: '返品',
      return_sale_label: 'レシートの取引番号 (スキャンまたは入力)',
      return_lookup_button: '呼び出す',
      return_lookup_empty: 'レシートの取引番号を入力するか、バーコードをスキャンしてください。',
      return_sale_title: '取引 {sale} · 顧客 {customer} · {amount} 円 · {time}',
      return_sale_external: '(他店・導入前のレシートから記録)',
      rs_used: '利用ポイント',
      rs_earned: '獲得ポイント',
      rs_returned: '返品済み',
      rs_returnable: '返品できる金額',
      col_amount: '金額',
      col_taken: '取消',
      col_given: '返却',
      col_shortfall: '不足',
      yen: '{n} 円',
      return_amount_label: '返品する金額 (円)',
      return_submit: '一部を返品する',
      return_submit_n: '{amount} 円を返品する',
      return_all: '全額を返品する',
      return_all_n: '残り全額 ({amount} 円) を返品する',
      return_nothing_left: 'この取引はすべて返品済みです。',
      return_preview: '獲得分 {taken} pt を取り消し、利用分 {given} pt をお返しします。',
      result_return: '{amount} 円を返品しました: 獲得分 {taken} pt を取り消し、利用分 {given} pt をお返ししました。残高 {balance} pt。',
      result_return_shortfall: 'お客様のポイントが足りず、{n} pt は取り消せませんでした (不足分として記録済み)。',
      kind_sale: '会計',
      kind_return: '返品',
      split_sale: '利用 {used} / 獲得 {earned}',
      split_return: '取消 {taken} / 返却 {given}',
      code_spend_min_points: 'ポイントは 1 回 {min} pt 以上から利用できます。',
      code_spend_unit: 'ポイントは {unit} pt 単位で利用できます。',
      code_spend_max_share: 'この金額で利用できるのは {max} pt までです。',
      code_spend_rule: 'この店舗のポイント利用ルールに合いません。',
      code_changed_elsewhere_offline: 'オフライン中: このお客様のポイントは他店かオンラインで変わったため、今は利用できません。ポイントを使わない会計はできます。',
      code_granted_by_register: 'In this store the Smaregi register grants the points for a purchase; pointsd does not (that would grant them twice). Points can still be given as a number of points.',
      code_points_expired: 'easyPoints says this customer\'s points have expired: they cannot be used.',
      slip_print: 'Print slip',
      slip_width: 'Paper width',
      slip_title_sale: 'Points slip (sale)',
      slip_title_earn: 'Points slip (earn)',
      slip_title_redeem: 'Points slip (redeem)',
      slip_title_return: 'Points slip (return)',
      slip_store: 'Store {store}',
      slip_member: 'Member',
      slip_before: 'Points before',
      slip_earned: 'Earned',
      slip_used: 'Used',
      slip_after: 'Points after',
      slip_by_register: 'by the register',
      slip_confirmed: 'Confirmed by Smaregi',
      slip_queued: 'Saved in the store, waiting to sync',
      granting_register: 'The Smaregi register grants the points (this sale earns none here).',
      granting_unchecked: 'The store\'s Smaregi point settings have not been read yet: the register is taken to grant.',
      code_granted_by_register: 'この店舗ではスマレジのレジがお買い上げのポイントを付与します。pointsd からは付与できません (二重付与になります)。ポイント数での付与はできます。',
      code_points_expired: 'easyPoints でこのお客様のポイントは有効期限切れです。利用できません。',
      slip_print: '控えを印刷',
      slip_width: '用紙の幅',
      slip_title_sale: 'ポイント控え (お会計)',
      slip_title_earn: 'ポイント控え (付与)',
      slip_title_redeem: 'ポイント控え (利用)',
      slip_title_return: 'ポイント控え (返品)',
      slip_store: '店舗 {store}',
      slip_member: '会員番号',
      slip_before: '前回ポイント',
      slip_earned: '付与ポイント',
      slip_used: '利用ポイント',
      slip_after: '現在ポイント',
      slip_by_register: 'レジで付与',
      slip_confirmed: '本部 (スマレジ) に反映済み',
      slip_queued: '店舗に保存済み・本部へ送信待ち',
      granting_register: 'ポイントはスマレジのレジが付与します (このお会計では付与しません)。',
      granting_unchecked: 'スマレジの店舗設定をまだ確認できていないため、レジが付与するものとして扱っています。',
      code_unknown_sale: 'この取引番号の会計はこの店舗に記録がありません。番号を確認するか、もう一度スキャンしてください。',
      code_return_exceeds_sale: '返品できるのは残り {n} 円までです。',
      code_sale_not_counted: 'この会計のポイントは反映されていないため、返品で戻すポイントはありません。',
      code_idempotency_conflict_sale: 'このレシート番号はすでに別のお会計で使われています。番号を確認してください。',
      code_too_large: '送信内容が大きすぎます。'
    },
    en: {
      app_title: 'Points',
      sign_in: 'Sign in',
      sign_out: 'Sign out',
      signin_title: 'Sign in this register',
      signin_help: "Enter the register token from the store's manager. It is kept on this device, so you only do this once.",
      token_label: 'Register token',
      register_label: 'Register ID (recorded with each transaction)',
      register_help: "A name to tell this device's transactions apart. If unsure, leave it as it is.",
      err_token_empty: 'Enter the token.',
      err_token_bad: "This token was not accepted. Check it, or ask the store's manager.",
      err_token_revoked: 'This token is no longer accepted. Please sign in again.',
      err_register_id: 'The register ID must be 1–64 letters, digits or symbols, without spaces.',
      signed_out: 'Signed out.',
      conn_online: 'Online',
      conn_offline: 'Offline',
      conn_unreachable: 'No connection',
      lookup_label: 'Customer ID, member code or barcode',
      lookup_button: 'Look up',
      lookup_empty: 'Type a customer ID or member code, or scan the card.',
      available: 'Available points',
      pt: 'pt',
      confirmed: 'Confirmed',
      pending: 'Waiting to sync',
      expires: 'Expires',
      as_of: 'Balance as of',
      no_expiry: 'None',
      never: 'Not yet confirmed',
      ids: 'Customer ID {id}',
      ids_code: 'Customer ID {id} · Member code {code}',
      no_name: '(no name)',
      stale_hint: 'This balance is from {time} and may be out of date.',
      stale_never: 'This balance has not been confirmed by headquarters yet.',
      expired_hint: 'Expired: confirmed points cannot be spent while offline.',
      expiry_on: 'Points expire on {date}.',
      expiry_soon: 'Points expire on {date} (in {days} days).',
      expiry_moves: 'easyPoints expiry: a sale or earn moves the date to about {months} months from now.',
      local_only: 'Customer registered while offline; headquarters has not confirmed it yet.',
      earn_title: 'Earn points',
      earn_mode: 'Earn by',
      earn_by_amount: 'Purchase amount',
      earn_by_points: 'Points',
      earn_amount_label: 'Purchase amount (yen)',
      earn_points_label: 'Points to add',
      earn_preview: '¥{amount} → {points} points',
      earn_rule: '1 point per ¥{yen}',
      earn_submit: 'Add points',
      earn_submit_n: 'Add {points} points',
      redeem_title: 'Redeem points',
      redeem_label: 'Points to redeem',
      redeem_hint: 'Up to {n} points available.',
      redeem_hint_offline: 'Offline: at most {limit} points at a time; up to {n} points available.',
      redeem_disabled_offline: 'This store does not allow redeeming points while offline.',
      redeem_submit: 'Redeem',
      redeem_submit_n: 'Redeem {points} points',
      working: 'Working…',
      result_confirmed: 'Confirmed',
      result_queued: 'Saved — will sync',
      result_rejected: 'Refused by headquarters — not counted',
      result_synced: 'This transaction has since reached headquarters and is confirmed.',
      result_earn: 'Added {points} points for {name}. Balance: {balance} points.',
      result_redeem: '{name} redeemed {points} points. Balance: {balance} points.',
      result_queued_help: "Saved on the store's PC; it is sent to headquarters automatically when the connection is back.",
      recent_title: 'Recent transactions at this register',
      recent_empty: 'No transactions yet.',
      col_time: 'Time',
      col_customer: 'Customer',
      col_kind: 'Kind',
      col_points: 'Points',
      col_state: 'State',
      kind_earn: 'Earn',
      kind_redeem: 'Redeem',
      kind_adjust: 'Adjust',
      state_pending: 'Waiting to sync',
      state_sending: 'Sending',
      state_ambiguous: 'Checking',
      state_applied: 'Confirmed',
      state_rejected: 'Refused',
      state_needs_review: 'Needs review',
      state_discarded: 'Discarded',
      review_title: 'Review queue (manager)',
      review_help: 'Transactions whose delivery could not be proven. Check the customer in Smaregi, then decide.',
      review_empty: 'Nothing to review.',
      review_what: '{time} · customer {customer} · {kind} {points} pt · {register}',
      review_evidence: 'Before {before} pt → {expected} pt if applied / read back {after} pt',
      review_note: 'Reason for the decision (required)',
      review_applied: 'It was applied',
      review_resend: 'Send again',
      review_discard: 'Discard',
      review_need_note: 'Enter a reason for the decision.',
      review_done: 'Resolved {txn} as “{action}”.',
      banner_offline: 'Offline — balances as of {time}; {n} transactions waiting to sync',
      banner_offline_one: 'Offline — balances as of {time}; 1 transaction waiting to sync',
      banner_syncing: 'Back online — syncing {n} transactions',
      banner_syncing_one: 'Back online — syncing 1 transaction',
      banner_unreachable: "Cannot reach pointsd from this device — check this device's network.",
      footer: 'Store {store} · Register {register} · pointsd {version}',
      footer_granting: 'Points granted by: {by}',
      granted_by_register: 'the Smaregi register',
      granted_by_pointsd: 'pointsd',
      field_points: 'points',
      field_purchase_amount: 'amount',
      field_customer_id: 'customer',
      field_q: 'search',
      field_note: 'reason',
      field_txn_id: 'transaction number',
      field_register_id: 'register ID',
      err_positive: 'Enter a whole number of 1 or more.',
      err_zero_points: 'This amount earns no points.',
      err_too_big: 'That number is too large.',
      err_network: 'Could not reach pointsd. Press again — it will not be counted twice.',
      err_network_read: 'Could not reach pointsd. Please try again.',
      err_generic: 'That did not work (HTTP {status}).',
      code_insufficient_points: 'Not enough points: at most {n} points can be redeemed.',
      code_insufficient_points_plain: 'Not enough points. Check the balance.',
      code_offline_redeem_limit: 'While offline, at most {limit} points can be redeemed at a time.',
      code_offline_redeem_disabled: 'Points cannot be redeemed while offline. Please try again when the store is back online.',
      code_upstream_rejected: 'Smaregi refused this transaction, so it does not count (for example, the points may have expired).',
      code_not_found: 'No customer matches that. Check the number, or scan again.',
      code_not_found_txn: 'No such transaction.',
      code_validation: 'Please check: {fields}',
      code_unauthorized: 'This token is no longer accepted. Please sign in again.',
      code_forbidden: 'This needs a manager token.',
      code_storage_full: "The store PC's disk is full, so nothing was saved. Free some space, then press again.",
      code_storage_error: 'Nothing was saved because of a storage problem. Please press again.',
      code_idempotency_conflict: 'This transaction number was already used for something else. Press again to send it as a new transaction.',
      code_upstream_unavailable: 'Headquarters (Smaregi) cannot be reached. Please try again later.',
      code_not_resolvable: 'This transaction has already been resolved.',
      sale_title: 'Sale (use and earn points)',
      sale_amount_label: 'Amount (yen, tax included)',
      sale_use_label: 'Points to use',
      sale_use_all: 'Use all',
      sale_use_hint: 'Up to {n} points can be used on this sale.',
      sale_use_hint_none: 'No points can be used on this sale.',
      sale_use_hint_start: 'Enter the amount to see the points that can be used and earned.',
      sale_receipt_label: 'Receipt number (optional; used for returns)',
      sale_pv_used: 'Used',
      sale_pv_earned: 'Earned',
      sale_pv_net: 'Net',
      sale_pv_after: 'Balance after',
      sale_rules: 'Rules: {rules}',
      sale_submit: 'Confirm sale',
      sale_submit_n: 'Confirm ¥{amount} sale',
      sale_amount_first: 'Enter the amount first.',
      err_receipt: 'The receipt number must be 1–64 letters, digits or symbols, without spaces.',
      result_sale: '{name}: ¥{amount} sale, {used} points used, {earned} points earned. Balance: {balance} points. Sale {sale}',
      return_title: 'Return',
      return_sale_label: 'Sale number from the receipt (scan or type)',
      return_lookup_button: 'Find sale',
      return_lookup_empty: 'Type the sale number from the receipt, or scan its barcode.',
      return_sale_title: 'Sale {sale} · customer {customer} · ¥{amount} · {time}',
      return_sale_external: '(recorded from a receipt of another store or from before pointsd)',
      rs_used: 'Points used',
      rs_earned: 'Points earned',
      rs_returned: 'Returned',
      rs_returnable: 'Still returnable',
      col_amount: 'Amount',
      col_taken: 'Taken back',
      col_given: 'Given back',
      col_shortfall: 'Shortfall',
      yen: '¥{n}',
      return_amount_label: 'Amount to return (yen)',
      return_submit: 'Return part',
      return_submit_n: 'Return ¥{amount}',
      return_all: 'Return all',
      return_all_n: 'Return all that is left (¥{amount})',
      return_nothing_left: 'Everything on this sale has been returned.',
      return_preview: 'Takes back {taken} earned points and gives back {given} used points.',
      result_return: 'Returned ¥{amount}: took back {taken} earned points, gave back {given} used points. Balance: {balance} points.',
      result_return_shortfall: 'The customer no longer had {n} of the points to take back; recorded as a shortfall.',
      kind_sale: 'Sale',
      kind_return: 'Return',
      split_sale: 'used {used} / earned {earned}',
      split_return: 'taken {taken} / given {given}',
      code_spend_min_points: 'At least {min} points must be used at once.',
      code_spend_unit: 'Points are used in multiples of {unit}.',
      code_spend_max_share: 'At most {max} points can be used on this amount.',
      code_spend_rule: "That is against this store's rules for using points.",
      code_changed_elsewhere_offline: "Offline: this customer's points changed in another store or online, so they cannot be used now. A sale without points still works.",
      code_unknown_sale: 'This store has no sale with that number. Check it, or scan again.',
      code_return_exceeds_sale: 'At most ¥{n} can still be returned.',
      code_sale_not_counted: "This sale's points never counted, so a return has nothing to give back.",
      code_idempotency_conflict_sale: 'That receipt number was already used for another sale. Check the number.',
      code_too_large: 'The request is too large.'
    }
  };

  /* ------------------------------------------------------------------ state */

  var state = {
    lang: 'ja',
    token: null,
    register: null,
    config: null,
    status: null,        // last GET /v1/status answer
    reachable: true,     // did the last status poll reach the daemon?
    customer: null,      // last customer view
    result: null,        // {kind, status, points, balance, name}
    errors: {},          // element id -> message (see msg())
    banner: null,        // {kind, ...} or null
    recent: null,        // list of transactions
    review: null,        // list of transactions in needs_review
    role: null,          // 'manager' | 'register' | null (unknown)
    reviewMessage: null,
    lastSig: '',
    lastGrants: null,    // whether the register grants, as last rendered
    pollTimer: null,
    saleQuote: null,     // last POST /v1/sales/quote answer for the sale form's figures
    saleMax: null,       // {amount, max}: the most points a sale of that amount may use
    saleSeq: 0,          // quotes answered out of order are dropped
    saleTimer: null,
    returnSale: null,    // GET /v1/sales/{id} answer shown in the return card
    returnResult: null,  // {status, amount, taken, given, shortfall, balance, id}
    busy: {}
  };

  function $(id) { return document.getElementById(id); }

  function store(kind) {
    try { return kind === 'local' ? window.localStorage : window.sessionStorage; } catch (e) { return null; }
  }
  function load(kind, key) {
    var s = store(kind);
    try { return s ? s.getItem(key) : null; } catch (e) { return null; }
  }
  function save(kind, key, value) {
    var s = store(kind);
    try {
      if (!s) return;
      if (value === null) s.removeItem(key); else s.setItem(key, value);
    } catch (e) { /* private mode on old Safari: the page still works for this visit */ }
  }

  /* ------------------------------------------------------------------ formatting */

  function t(key, params) {
    var table = TEXTS[state.lang] || TEXTS.ja;
    var s = table[key];
    if (s === undefined) s = TEXTS.ja[key];
    if (s === undefined) return key;
    if (params) {
      s = s.replace(/\{(\w+)\}/g, function (m, name) {
        return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : m;
      });
    }
    return s;
  }

  var numberFormats = {};
  function fmt(n) {
    if (n === null || n === undefined || isNaN(n)) return '—';
    var locale = state.lang === 'en' ? 'en-US' : 'ja-JP';
    try {
      if (!numberFormats[locale]) numberFormats[locale] = new Intl.NumberFormat(locale);
      return numberFormats[locale].format(n);
    } catch (e) {
      return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    }
  }
  function signed(n) { return (n > 0 ? '+' : n < 0 ? '−' : '') + fmt(Math.abs(n)); }

  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function parseTime(s) {
    if (!s) return null;
    var d = new Date(s);
    return isNaN(d.getTime()) ? null : d;
  }
  function hhmm(s) {
    var d = parseTime(s);
    return d ? pad(d.getHours()) + ':' + pad(d.getMinutes()) : '—';
  }
  function dateTime(s) {
    var d = parseTime(s);
    if (!d) return '—';
    var today = new Date();
    var sameDay = d.getFullYear() === today.getFullYear() && d.getMonth() === today.getMonth() &&
      d.getDate() === today.getDate();
    var time = pad(d.getHours()) + ':' + pad(d.getMinutes());
    if (sameDay) return time;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + time;
  }

  /* A message is kept as {key, params} (or {text}) and turned into words when shown, so a
     language switch re-renders everything already on screen. */
  function msg(key, params) { return { key: key, params: params || {} }; }
  function msgText(m) {
    if (!m) return '';
    if (m.text !== undefined) return m.text;
    var p = {};
    for (var k in m.params) {
      if (Object.prototype.hasOwnProperty.call(m.params, k)) {
        var v = m.params[k];
        p[k] = typeof v === 'number' ? fmt(v) : typeof v === 'function' ? v() : v;
      }
    }
    return t(m.key, p);
  }

  /* ------------------------------------------------------------------ API */

  function ApiFailure(status, problem, network) {
    this.status = status;
    this.problem = problem;
    this.network = !!network;
  }

  function api(method, path, body, opts) {
    opts = opts || {};
    var headers = { 'Accept': 'application/json, application/problem+json' };
    var token = opts.token !== undefined ? opts.token : state.token;
    if (token) headers['Authorization'] = 'Bearer ' + token;
    var init = {
      method: method,
      headers: headers,
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer'
    };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    var timer = null;
    if (typeof AbortController === 'function') {
      var ctrl = new AbortController();
      init.signal = ctrl.signal;
      timer = setTimeout(function () { ctrl.abort(); }, opts.timeout || 10000);
    }
    return fetch(path, init).then(function (resp) {
      return resp.text().then(function (text) {
        if (timer) clearTimeout(timer);
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (resp.ok) return data;
        var problem = data && typeof data === 'object' && typeof data.code === 'string' ? data : null;
        var failure = new ApiFailure(resp.status, problem, false);
        if (resp.status === 401 && !opts.signin && state.token) {
          signOut(msg('err_token_revoked'));
        }
        throw failure;
      });
    }, function () {
      if (timer) clearTimeout(timer);
      throw new ApiFailure(0, null, true);
    });
  }

  /* An API failure as a sentence a cashier understands; never raw JSON. */
  function failureMsg(f, ctx) {
    ctx = ctx || {};
    if (!(f instanceof ApiFailure)) return msg('err_generic', { status: '?' });
    if (f.network) return msg(ctx.write ? 'err_network' : 'err_network_read');
    var p = f.problem;
    var code = p ? p.code : null;
    switch (code) {
      case 'insufficient_points':
        return ctx.spendable !== undefined
          ? msg('code_insufficient_points', { n: ctx.spendable })
          : msg('code_insufficient_points_plain');
      case 'offline_redeem_limit':
        return msg('code_offline_redeem_limit', { limit: configLimit() });
      case 'not_found':
        return msg(ctx.txn ? 'code_not_found_txn' : 'code_not_found');
      case 'spend_rule':
        return spendMsg(p, ctx);
      case 'return_exceeds_sale':
        return ctx.returnable !== undefined
          ? msg('code_return_exceeds_sale', { n: ctx.returnable }) : { text: p.detail };
      case 'idempotency_conflict':
        return msg(ctx.sale ? 'code_idempotency_conflict_sale' : 'code_idempotency_conflict');
      case 'changed_elsewhere_offline':
      case 'granted_by_register':
      case 'points_expired':
      case 'unknown_sale':
      case 'sale_not_counted':
        return msg('code_' + code);
      case 'validation':
      case 'bad_json':
        return msg('code_validation', { fields: function () { return fieldNames(p); } });
      case 'unauthorized':
      case 'offline_redeem_disabled':
      case 'upstream_rejected':
      case 'forbidden':
      case 'storage_full':
      case 'storage_error':
      case 'upstream_unavailable':
      case 'not_resolvable':
      case 'too_large':
        return msg('code_' + code);
      default:
        if (p && p.detail) return { text: p.detail };
        return msg('err_generic', { status: f.status });
    }
  }

  /* A refused spend rule in the cashier's words, with the figure of the store's rule. */
  function spendMsg(p, ctx) {
    var sp = state.config && state.config.spend ? state.config.spend : null;
    var rule = p ? p.rule : null;
    if (sp && rule === 'spend.min_points') return msg('code_spend_min_points', { min: sp.min_points });
    if (sp && rule === 'spend.unit') return msg('code_spend_unit', { unit: sp.unit });
    if (sp && rule === 'spend.max_share' && ctx.amount) return msg('code_spend_max_share', { max: maxPointsFor(ctx.amount) });
    return msg('code_spend_rule');
  }

  /* What spend.max_share allows on an amount, as the daemon counts it (ledger::max_points_for). */
  function maxPointsFor(amount) {
    var sp = state.config.spend;
    var yen = Math.max(0, Math.min(amount, Math.floor(amount * sp.max_share + 1e-6)));
    return Math.floor(yen / Math.max(1, sp.yen_per_point));
  }

  function fieldNames(p) {
    var names = [];
    var errs = p && p.errors && p.errors.length ? p.errors : [];
    for (var i = 0; i < errs.length; i++) {
      var key = 'field_' + errs[i].field;
      var name = TEXTS.ja[key] !== undefined ? t(key) : errs[i].field;
      if (names.indexOf(name) < 0) names.push(name);
    }
    return names.length ? names.join(state.lang === 'en' ? ', ' : '、') : (p && p.detail) || '';
  }

  function configLimit() {
    return state.config ? state.config.offline_max_redeem_points : 0;
  }

  /* ------------------------------------------------------------------ ids */

  /* A random UUID (v4) from getRandomValues: crypto.randomUUID is missing on older iPad
     Safari and on pages served over plain http on the store LAN. */
  function newTxnId() {
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = '';
    for (var i = 0; i < 16; i++) {
      h += (b[i] < 16 ? '0' : '') + b[i].toString(16);
      if (i === 3 || i === 5 || i === 7 || i === 9) h += '-';
    }
    return h;
  }

  /* One txn_id per form submission. If the answer never came (network, timeout, 5xx), the
     same submission sent again reuses its txn_id, so the daemon counts it once. */
  function txnIdFor(form, body) {
    var key = JSON.stringify(body);
    var saved = null;
    try { saved = JSON.parse(load('session', SS_PENDING + form) || 'null'); } catch (e) { saved = null; }
    if (saved && saved.key === key && saved.id) return saved.id;
    var id = newTxnId();
    save('session', SS_PENDING + form, JSON.stringify({ key: key, id: id }));
    return id;
  }
  function settled(form) { save('session', SS_PENDING + form, null); }
  function isDefinitive(f) {
    return !f.network && f.status >= 400 && f.status < 500 && f.status !== 408 && f.status !== 429;
  }

  function newRegisterId() {
    var b = new Uint8Array(4);
    window.crypto.getRandomValues(b);
    var h = '';
    for (var i = 0; i < b.length; i++) h += (b[i] < 16 ? '0' : '') + b[i].toString(16);
    return 'web-' + h;
  }
  function validId(s) { return /^[\x21-\x7e]{1,64}$/.test(s); }

  /* ------------------------------------------------------------------ rendering */

  function show(el, visible) { el.hidden = !visible; }
  function setText(id, text) { $(id).textContent = text; }

  function setError(id, m) {
    state.errors[id] = m || null;
    renderError(id);
  }
  function renderError(id) {
    var m = state.errors[id];
    var el = $(id);
    el.textContent = m ? msgText(m) : '';
    show(el, !!m);
  }

  function renderStatic() {
    document.documentElement.lang = state.lang;
    document.title = t('app_title') + ' — pointsd';
    var nodes = document.querySelectorAll('[data-i18n]');
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = t(nodes[i].getAttribute('data-i18n'));
    var toggle = $('lang-toggle');
    var other = state.lang === 'ja' ? 'en' : 'ja';
    toggle.textContent = other === 'en' ? 'English' : '日本語';
    toggle.setAttribute('lang', other);
    toggle.setAttribute('data-lang-target', other);
  }

  function renderAll() {
    renderStatic();
    for (var id in state.errors) {
      if (Object.prototype.hasOwnProperty.call(state.errors, id)) renderError(id);
    }
    renderConn();
    renderBanner();
    renderCustomer();
    renderSale();
    renderEarn();
    renderRedeem();
    renderResult();
    renderReturn();
    renderRecent();
    renderReview();
    renderFooter();
  }

  function isOnline() {
    if (state.status) return !!state.status.online && state.reachable;
    return state.customer ? !!state.customer.online : true;
  }

  function renderConn() {
    var el = $('conn');
    if (!state.token || (!state.status && state.reachable)) {
      el.textContent = '';
      el.setAttribute('data-state', 'unknown');
      return;
    }
    var s = !state.reachable ? 'unreachable' : state.status.online ? 'online' : 'offline';
    el.setAttribute('data-state', s);
    el.textContent = t('conn_' + s);
  }

  function waiting(s) {
    var q = s && s.queue ? s.queue : {};
    return (q.pending || 0) + (q.sending || 0) + (q.ambiguous || 0);
  }

  function computeBanner() {
    if (!state.token) return null;
    if (!state.reachable) return { kind: 'unreachable' };
    var s = state.status;
    if (!s) return null;
    var n = waiting(s);
    if (!s.online) return { kind: 'offline', n: n, time: s.upstream ? s.upstream.last_ok_at : null };
    // Back online: keep the banner until the queue has drained. A send that is merely slow
    // online only shows after a while, so a normal write does not make it flash.
    var oldest = s.queue && s.queue.oldest_pending_age_s;
    if (n > 0 && (state.banner || (oldest !== null && oldest >= 10))) return { kind: 'syncing', n: n };
    return null;
  }

  function renderBanner() {
    var el = $('offline-banner');
    var b = state.banner;
    if (!b) {
      el.setAttribute('data-state', 'none');
      el.textContent = '';
      show(el, false);
      return;
    }
    var text;
    if (b.kind === 'offline') {
      text = t(b.n === 1 && state.lang === 'en' ? 'banner_offline_one' : 'banner_offline',
        { time: hhmm(b.time), n: fmt(b.n) });
    } else if (b.kind === 'syncing') {
      text = t(b.n === 1 && state.lang === 'en' ? 'banner_syncing_one' : 'banner_syncing', { n: fmt(b.n) });
    } else {
      text = t('banner_unreachable');
    }
    el.setAttribute('data-state', b.kind);
    el.setAttribute('data-waiting', b.n === undefined ? '' : String(b.n));
    el.textContent = text;
    show(el, true);
  }

  function renderCustomer() {
    var c = state.customer;
    var card = $('customer');
    if (!c) { show(card, false); return; }
    show(card, true);
    var b = c.balance || {};
    card.setAttribute('data-customer-id', c.customer_id);
    card.setAttribute('data-available', String(b.available));
    card.setAttribute('data-pending', String(b.pending));
    card.setAttribute('data-stale', c.stale ? 'true' : 'false');
    setText('cust-name', c.name || t('no_name'));
    setText('cust-ids', c.code ? t('ids_code', { id: c.customer_id, code: c.code }) : t('ids', { id: c.customer_id }));
    var tier = $('cust-tier');
    tier.textContent = c.tier || '';
    show(tier, !!c.tier);
    setText('cust-available', fmt(b.available));
    setText('cust-confirmed', fmt(b.confirmed));
    setText('cust-pending', b.pending ? signed(b.pending) : fmt(0));
    setText('cust-expires', c.expires_at ? expiryDate(c) : t('no_expiry'));
    renderExpiry(c);
    setText('cust-asof', c.as_of ? dateTime(c.as_of) : t('never'));
    var stale = $('cust-stale');
    stale.textContent = c.stale ? (c.as_of ? t('stale_hint', { time: dateTime(c.as_of) }) : t('stale_never')) : '';
    show(stale, !!c.stale);
    var expired = $('cust-expired');
    expired.textContent = c.expired ? t('expired_hint') : '';
    show(expired, !!c.expired);
    var local = $('cust-local');
    local.textContent = c.local_only ? t('local_only') : '';
    show(local, !!c.local_only);
  }

  /* A Smaregi expiry is a date; an easyPoints one an instant, shown as the store's local date. */
  function expiryDate(c) {
    var d = c.expires_source === 'easypoints' ? parseTime(c.expires_at) : null;
    if (!d) return String(c.expires_at).slice(0, 10);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate());
  }

  /* "Points expire on …", a warning within 30 days, and for easyPoints that activity moves it. */
  function renderExpiry(c) {
    var el = $('cust-expiry');
    var at = !c.expires_at || c.expired ? null : c.expires_source === 'easypoints'
      ? parseTime(c.expires_at) : parseTime(String(c.expires_at).slice(0, 10) + 'T23:59:59+09:00');
    if (!at) { el.textContent = ''; show(el, false); el.removeAttribute('data-days'); return; }
    var days = Math.max(0, Math.ceil((at.getTime() - Date.now()) / 86400000));
    var soon = days <= 30;
    var text = t(soon ? 'expiry_soon' : 'expiry_on', { date: expiryDate(c), days: fmt(days) });
    var e = c.easypoints;
    if (c.expires_source === 'easypoints' && e && e.expiration_delay) {
      text += ' ' + t('expiry_moves', { months: fmt(e.expiration_delay) });
    }
    el.textContent = text;
    el.setAttribute('data-days', String(days));
    el.className = soon ? 'hint warn' : 'hint';
    show(el, true);
  }

  /* ------------------------------------------------------------------ earn */

  function earnMode() { return $('earn-mode-points').checked ? 'points' : 'amount'; }

  function parseWhole(s) {
    // Accept what a cashier might type: full-width digits, thousands separators, spaces.
    s = String(s || '').replace(/[０-９]/g, function (d) { return String.fromCharCode(d.charCodeAt(0) - 0xfee0); });
    s = s.replace(/[,，\s円¥￥]/g, '');
    if (!/^\d+$/.test(s)) return null;
    var n = parseInt(s, 10);
    return isFinite(n) ? n : null;
  }

  function pointsForPurchase(amount) {
    var c = state.config;
    var per = c && c.yen_per_point > 0 ? c.yen_per_point : 100;
    var rounding = c ? c.rounding : 'floor';
    if (rounding === 'ceil') return Math.floor((amount + per - 1) / per);
    if (rounding === 'round') return Math.floor((amount + Math.floor(per / 2)) / per);
    return Math.floor(amount / per);
  }

  /* What the earn form would send, or null when the input is not a usable number yet. */
  function earnPoints() {
    var v = parseWhole($('earn-value').value);
    if (v === null) return null;
    if (earnMode() === 'amount') return { amount: v, points: pointsForPurchase(v) };
    return { points: v };
  }

  /* Who grants points for a purchase, as the daemon says (GET /v1/status granting). */
  function granting() { return state.status && state.status.granting ? state.status.granting : null; }
  function registerGrants() { var g = granting(); return !!g && g.granted_by === 'register'; }

  function renderEarn() {
    // Where the register grants, a purchase earns there: only points can be given here.
    var byRegister = registerGrants();
    show($('earn-mode-amount'), !byRegister);
    show(document.querySelector('label[for="earn-mode-amount"]'), !byRegister);
    if (byRegister && !$('earn-mode-points').checked) $('earn-mode-points').checked = true;
    var mode = earnMode();
    setText('earn-value-label', t(mode === 'amount' ? 'earn_amount_label' : 'earn_points_label'));
    var e = earnPoints();
    var preview = '';
    if (mode === 'amount') {
      preview = e ? t('earn_preview', { amount: fmt(e.amount), points: fmt(e.points) })
        : t('earn_rule', { yen: fmt(state.config ? state.config.yen_per_point : 100) });
    }
    setText('earn-preview', preview);
    var btn = $('earn-submit');
    btn.textContent = state.busy.earn ? t('working')
      : e && e.points > 0 ? t('earn_submit_n', { points: fmt(e.points) }) : t('earn_submit');
  }

  function submitEarn(ev) {
    ev.preventDefault();
    var c = state.customer;
    if (!c || state.busy.earn) return;
    setError('earn-error', null);
    var e = earnPoints();
    if (!e || (e.amount === undefined && e.points < 1)) {
      setError('earn-error', msg('err_positive'));
      $('earn-value').focus();
      return;
    }
    if (e.points < 1) {
      setError('earn-error', msg('err_zero_points'));
      $('earn-value').focus();
      return;
    }
    if (e.points > 10000000 || (e.amount !== undefined && e.amount > 10000000000)) {
      setError('earn-error', msg('err_too_big'));
      return;
    }
    var body = { customer_id: c.customer_id, kind: 'earn' };
    if (e.amount !== undefined) body.purchase_amount = e.amount; else body.points = e.points;
    if (state.register) body.register_id = state.register;
    write('earn', body, 'earn-error');
  }


  /* ------------------------------------------------------------------ sale */

  /* The sale form's numbers: an empty "points to use" is 0; null where the input is unusable. */
  function saleInputs() {
    var amount = parseWhole($('sale-amount').value);
    var raw = $('sale-use').value.replace(/\s/g, '');
    return { amount: amount, used: raw === '' ? 0 : parseWhole(raw) };
  }

  function onSaleInput() {
    setError('sale-error', null);
    state.saleQuote = null;
    renderSale();
    if (state.saleTimer) clearTimeout(state.saleTimer);
    state.saleTimer = setTimeout(requestQuote, 250);
  }

  function quote(c, amount, used) {
    return api('POST', '/v1/sales/quote', { customer_id: c.customer_id, amount: amount, points_used: used }, { timeout: 8000 });
  }

  /* The daemon's figures for what the form says now; a refusal shows as the form's error. */
  function requestQuote() {
    state.saleTimer = null;
    var c = state.customer;
    var x = saleInputs();
    state.saleSeq += 1;
    var seq = state.saleSeq;
    if (!c || !x.amount || x.used === null) {
      state.saleQuote = null;
      renderSale();
      return Promise.resolve(null);
    }
    return quote(c, x.amount, x.used).then(function (q) {
      if (seq !== state.saleSeq) return null;
      state.saleQuote = q;
      state.saleMax = { amount: x.amount, max: q.max_points_used };
      setError('sale-error', null);
      renderSale();
      return q;
    }, function (f) {
      if (seq !== state.saleSeq) return null;
      state.saleQuote = null;
      if (f.status !== 401) setError('sale-error', failureMsg(f, { sale: true, amount: x.amount, spendable: spendable(c) }));
      renderSale();
      // The hint still says how many points this amount could use.
      if (x.used > 0 && f.problem) {
        quote(c, x.amount, 0).then(function (q) {
          if (seq !== state.saleSeq) return;
          state.saleMax = { amount: x.amount, max: q.max_points_used };
          renderSale();
        }, function () { /* the hint stays as it was */ });
      }
      return null;
    });
  }

  /* "Use all": as many points as the rules and the balance allow on this amount. */
  function useAll() {
    var c = state.customer;
    var x = saleInputs();
    if (!c) return;
    setError('sale-error', null);
    if (!x.amount) {
      setError('sale-error', msg('sale_amount_first'));
      $('sale-amount').focus();
      return;
    }
    quote(c, x.amount, 0).then(function (q) {
      state.saleMax = { amount: x.amount, max: q.max_points_used };
      $('sale-use').value = String(q.max_points_used);
      return requestQuote();
    }, function (f) {
      if (f.status !== 401) setError('sale-error', failureMsg(f, { sale: true, amount: x.amount }));
    });
  }

  function renderSale() {
    var q = state.saleQuote;
    var x = saleInputs();
    var form = $('sale-form');
    form.setAttribute('data-quote', q ? 'ready' : 'none');
    show($('sale-preview'), !!q);
    // The register grants: no earn preview, and the sale says who grants.
    var byRegister = registerGrants() || !!(q && q.earned_by === 'register');
    var g = granting();
    show($('sale-pv-earned').parentNode, !byRegister);
    setText('sale-granting', byRegister
      ? t('granting_register') + (g && g.source === 'unchecked' ? ' ' + t('granting_unchecked') : '') : '');
    show($('sale-granting'), byRegister);
    form.setAttribute('data-granted-by', byRegister ? 'register' : 'pointsd');
    if (q) {
      setText('sale-pv-used', fmt(q.points_used) + ' ' + t('pt'));
      setText('sale-pv-earned', fmt(q.points_earned) + ' ' + t('pt'));
      setText('sale-pv-net', signed(q.net_delta) + ' ' + t('pt'));
      setText('sale-pv-after', fmt(q.balance_after ? q.balance_after.available : null) + ' ' + t('pt'));
      var names = [];
      for (var i = 0; i < (q.applied_rules || []).length; i++) names.push(q.applied_rules[i].rule);
      setText('sale-rules', names.length ? t('sale_rules', { rules: names.join(', ') }) : '');
    } else {
      setText('sale-rules', '');
    }
    var hint = '';
    if (!x.amount) hint = t('sale_use_hint_start');
    else if (state.saleMax && state.saleMax.amount === x.amount) {
      hint = state.saleMax.max > 0 ? t('sale_use_hint', { n: fmt(state.saleMax.max) }) : t('sale_use_hint_none');
    }
    setText('sale-use-hint', hint);
    $('sale-submit').textContent = state.busy.sale ? t('working')
      : x.amount ? t('sale_submit_n', { amount: fmt(x.amount) }) : t('sale_submit');
  }

  function submitSale(ev) {
    ev.preventDefault();
    var c = state.customer;
    if (!c || state.busy.sale) return;
    setError('sale-error', null);
    var x = saleInputs();
    if (!x.amount || x.amount < 1) {
      setError('sale-error', msg('err_positive'));
      $('sale-amount').focus();
      return;
    }
    if (x.used === null) {
      setError('sale-error', msg('err_positive'));
      $('sale-use').focus();
      return;
    }
    if (x.amount > 10000000000 || x.used > 10000000) {
      setError('sale-error', msg('err_too_big'));
      return;
    }
    var receipt = $('sale-receipt').value.replace(/^\s+|\s+$/g, '');
    if (receipt && !validId(receipt)) {
      setError('sale-error', msg('err_receipt'));
      $('sale-receipt').focus();
      return;
    }
    var body = { customer_id: c.customer_id, amount: x.amount, points_used: x.used };
    if (state.register) body.register_id = state.register;
    // A receipt number is the sale's id (a retry of it counts once); else one id per
    // submission, kept until an answer settles it.
    body.sale_id = receipt || txnIdFor('sale', body);
    state.busy.sale = true;
    $('sale-submit').disabled = true;
    state.result = null;
    renderResult();
    renderSale();
    api('POST', '/v1/sales', body, { timeout: 20000 }).then(function (ans) {
      settled('sale');
      if (state.customer && state.customer.customer_id === ans.customer_id && ans.balance) {
        state.customer.balance = ans.balance;
      }
      state.result = {
        kind: 'sale',
        status: ans.status === 'confirmed' ? 'confirmed' : 'queued',
        amount: ans.amount,
        used: ans.points_used,
        earned: ans.points_earned,
        earnedBy: ans.earned_by,
        net: ans.net_delta,
        balance: ans.balance ? ans.balance.available : null,
        name: c.name || c.customer_id,
        code: c.code || c.customer_id,
        at: new Date(),
        txn: ans.txn_id,
        sale: ans.sale_id
      };
      $('sale-amount').value = '';
      $('sale-use').value = '';
      $('sale-receipt').value = '';
      state.saleQuote = null;
      state.saleMax = null;
      renderCustomer();
      renderRedeem();
      renderResult();
      refreshRecent();
      refreshCustomer();
      pollSoon();
      var look = $('lookup-input');
      look.focus();
      look.select();
    }, function (f) {
      if (isDefinitive(f)) settled('sale');
      var ctx = { write: true, sale: true, amount: x.amount, spendable: spendable(c) };
      if (f.problem && f.problem.code === 'insufficient_points') {
        refreshCustomer().then(function () {
          if (state.customer) setError('sale-error', msg('code_insufficient_points', { n: spendable(state.customer) }));
        });
      }
      if (f.status !== 401) setError('sale-error', failureMsg(f, ctx));
    }).then(function () {
      state.busy.sale = false;
      $('sale-submit').disabled = false;
      renderSale();
    });
  }

  /* ------------------------------------------------------------------ return */

  function submitReturnLookup(ev) {
    ev.preventDefault();
    var input = $('return-sale-input');
    var id = input.value.replace(/^\s+|\s+$/g, '');
    setError('return-lookup-error', null);
    if (!id) {
      setError('return-lookup-error', msg('return_lookup_empty'));
      input.focus();
      return;
    }
    if (!validId(id)) {
      setError('return-lookup-error', msg('code_unknown_sale'));
      input.select();
      return;
    }
    if (state.busy.returnLookup) return;
    state.busy.returnLookup = true;
    $('return-lookup-submit').disabled = true;
    loadReturnSale(id, true).then(function () {
      state.busy.returnLookup = false;
      $('return-lookup-submit').disabled = false;
    });
  }

  /* Reads a sale with its returns. `fresh`: the cashier asked for it (errors shown, focus
     moves on); otherwise a quiet re-read after a return or a queue change. */
  function loadReturnSale(id, fresh) {
    return api('GET', '/v1/sales/' + encodeURIComponent(id), undefined, { timeout: 8000 }).then(function (sale) {
      var changed = !state.returnSale || state.returnSale.sale_id !== sale.sale_id;
      if (!fresh && changed) return;
      state.returnSale = sale;
      if (fresh && changed) {
        state.returnResult = null;
        $('return-amount').value = '';
        setError('return-error', null);
      }
      var r = state.returnResult;
      if (r && r.status === 'queued') {
        for (var i = 0; i < sale.returns.length; i++) {
          var x = sale.returns[i];
          if (x.return_id === r.id && x.status === 'confirmed') { r.status = 'confirmed'; r.synced = true; }
        }
      }
      renderReturn();
      if (fresh) $('return-amount').focus();
    }, function (f) {
      if (!fresh) return;
      state.returnSale = null;
      state.returnResult = null;
      if (f.status !== 401) setError('return-lookup-error', failureMsg(f, {}));
      renderReturn();
      $('return-sale-input').focus();
      $('return-sale-input').select();
    });
  }

  /* What returning `r` more yen takes back and gives back, by the cumulative rule: after
     returns totalling R of amount A, floor(E·R/A) earned and floor(U·R/A) used points. */
  function returnSplit(s, r) {
    var a = s.amount;
    var before = s.returned_amount;
    var after = before + r;
    return {
      taken: Math.floor(s.points_earned * after / a) - Math.floor(s.points_earned * before / a),
      given: Math.floor(s.points_used * after / a) - Math.floor(s.points_used * before / a)
    };
  }

  function renderReturn() {
    var s = state.returnSale;
    var card = $('returns');
    card.setAttribute('data-sale-id', s ? s.sale_id : '');
    card.setAttribute('data-returnable', s ? String(s.returnable_amount) : '');
    show($('return-sale'), !!s);
    if (s) {
      var title = t('return_sale_title', { sale: s.sale_id, customer: s.customer_id, amount: fmt(s.amount), time: dateTime(s.created_at) });
      if (s.external) title += ' ' + t('return_sale_external');
      setText('return-sale-title', title);
      setText('rs-used', fmt(s.points_used) + ' ' + t('pt'));
      setText('rs-earned', fmt(s.points_earned) + ' ' + t('pt'));
      setText('rs-returned', t('yen', { n: fmt(s.returned_amount) }));
      setText('rs-returnable', t('yen', { n: fmt(s.returnable_amount) }));
      var body = $('rs-body');
      while (body.firstChild) body.removeChild(body.firstChild);
      show($('rs-table'), s.returns.length > 0);
      for (var i = 0; i < s.returns.length; i++) {
        var x = s.returns[i];
        var tr = document.createElement('tr');
        tr.setAttribute('data-return-id', x.return_id);
        tr.setAttribute('data-state', x.state);
        cell(tr, dateTime(x.created_at));
        cell(tr, t('yen', { n: fmt(x.amount) }), 'num');
        cell(tr, fmt(x.points_taken_back), 'num');
        cell(tr, fmt(x.points_given_back), 'num');
        cell(tr, fmt(x.shortfall), 'num');
        cell(tr, stateBadge(x.state));
        body.appendChild(tr);
      }
      var left = s.returnable_amount;
      var r = parseWhole($('return-amount').value);
      var preview = '';
      if (left <= 0) preview = t('return_nothing_left');
      else if (r && r <= left) {
        var sp = returnSplit(s, r);
        preview = t('return_preview', { taken: fmt(sp.taken), given: fmt(sp.given) });
      }
      setText('return-preview', preview);
      $('return-amount').disabled = left <= 0;
      $('return-submit').disabled = left <= 0 || !!state.busy.ret;
      $('return-all').disabled = left <= 0 || !!state.busy.ret;
      $('return-submit').textContent = state.busy.ret ? t('working')
        : r ? t('return_submit_n', { amount: fmt(r) }) : t('return_submit');
      $('return-all').textContent = left > 0 ? t('return_all_n', { amount: fmt(left) }) : t('return_all');
    }
    var res = state.returnResult;
    var el = $('return-result');
    el.setAttribute('data-status', res ? res.status : 'none');
    show(el, !!res);
    if (res) {
      el.setAttribute('data-return-id', res.id);
      setText('return-result-title', t('result_' + res.status));
      var detail = t('result_return', { amount: fmt(res.amount), taken: fmt(res.taken), given: fmt(res.given), balance: fmt(res.balance) });
      if (res.shortfall > 0) detail += ' ' + t('result_return_shortfall', { n: fmt(res.shortfall) });
      if (res.status === 'queued') detail += ' ' + t('result_queued_help');
      if (res.status === 'confirmed' && res.synced) detail += ' ' + t('result_synced');
      setText('return-result-detail', detail);
    }
  }

  /* Returns all that is left (`all`) or the amount typed. */
  function sendReturn(all) {
    var s = state.returnSale;
    if (!s || state.busy.ret) return;
    setError('return-error', null);
    var body = { sale_id: s.sale_id };
    if (!all) {
      var r = parseWhole($('return-amount').value);
      if (!r || r < 1) {
        setError('return-error', msg('err_positive'));
        $('return-amount').focus();
        return;
      }
      if (r > s.returnable_amount) {
        setError('return-error', msg('code_return_exceeds_sale', { n: s.returnable_amount }));
        $('return-amount').focus();
        return;
      }
      body.amount = r;
    }
    if (state.register) body.register_id = state.register;
    body.return_id = txnIdFor('return', body);
    state.busy.ret = true;
    state.returnResult = null;
    renderReturn();
    api('POST', '/v1/returns', body, { timeout: 20000 }).then(function (ans) {
      settled('return');
      state.returnResult = {
        status: ans.status === 'confirmed' ? 'confirmed' : 'queued',
        amount: ans.amount,
        taken: ans.points_taken_back,
        given: ans.points_given_back,
        shortfall: ans.shortfall,
        balance: ans.balance ? ans.balance.available : null,
        id: ans.return_id,
        code: state.customer && state.customer.customer_id === ans.customer_id
          ? (state.customer.code || ans.customer_id) : ans.customer_id,
        at: new Date()
      };
      $('return-amount').value = '';
      if (state.customer && state.customer.customer_id === ans.customer_id && ans.balance) {
        state.customer.balance = ans.balance;
        renderCustomer();
        renderRedeem();
      }
      refreshRecent();
      pollSoon();
      return loadReturnSale(s.sale_id, false);
    }, function (f) {
      if (isDefinitive(f)) settled('return');
      // What is returnable may have changed at another register: read it again first.
      return loadReturnSale(s.sale_id, false).then(function () {
        var left = state.returnSale ? state.returnSale.returnable_amount : s.returnable_amount;
        if (f.status !== 401) setError('return-error', failureMsg(f, { write: true, returnable: left }));
      });
    }).then(function () {
      state.busy.ret = false;
      renderReturn();
    });
  }

  /* ------------------------------------------------------------------ redeem */

  function spendable(c) {
    var b = c.balance || {};
    if (c.expired && !isOnline()) return Math.max(0, (b.available || 0) - (b.confirmed || 0));
    return Math.max(0, b.available || 0);
  }

  function renderRedeem() {
    var c = state.customer;
    var hint = '';
    if (c) {
      var offline = !isOnline();
      if (offline && state.config && !state.config.offline_allow_redeem) hint = t('redeem_disabled_offline');
      else if (offline) hint = t('redeem_hint_offline', { limit: fmt(configLimit()), n: fmt(spendable(c)) });
      else hint = t('redeem_hint', { n: fmt(spendable(c)) });
    }
    setText('redeem-hint', hint);
    var n = parseWhole($('redeem-points').value);
    $('redeem-submit').textContent = state.busy.redeem ? t('working')
      : n ? t('redeem_submit_n', { points: fmt(n) }) : t('redeem_submit');
  }

  function submitRedeem(ev) {
    ev.preventDefault();
    var c = state.customer;
    if (!c || state.busy.redeem) return;
    setError('redeem-error', null);
    var n = parseWhole($('redeem-points').value);
    if (!n || n < 1) {
      setError('redeem-error', msg('err_positive'));
      $('redeem-points').focus();
      return;
    }
    // Refuse here what the daemon would refuse, with the same sentences.
    var offline = !isOnline();
    if (offline && state.config && !state.config.offline_allow_redeem) {
      setError('redeem-error', msg('code_offline_redeem_disabled'));
      return;
    }
    if (offline && state.config && n > state.config.offline_max_redeem_points) {
      setError('redeem-error', msg('code_offline_redeem_limit', { limit: configLimit() }));
      $('redeem-points').focus();
      return;
    }
    if (n > spendable(c)) {
      setError('redeem-error', msg('code_insufficient_points', { n: spendable(c) }));
      $('redeem-points').focus();
      return;
    }
    var body = { customer_id: c.customer_id, kind: 'redeem', points: n };
    if (state.register) body.register_id = state.register;
    write('redeem', body, 'redeem-error');
  }

  /* ------------------------------------------------------------------ writes */

  function write(form, body, errorId) {
    var txnId = txnIdFor(form, body);
    var send = {};
    for (var k in body) if (Object.prototype.hasOwnProperty.call(body, k)) send[k] = body[k];
    send.txn_id = txnId;
    state.busy[form] = true;
    $(form + '-submit').disabled = true;
    state.result = null;
    renderResult();
    renderEarn();
    renderRedeem();
    api('POST', '/v1/transactions', send, { timeout: 20000 }).then(function (ans) {
      settled(form);
      state.customer = ans.customer || state.customer;
      state.result = {
        kind: form,
        status: ans.status === 'confirmed' ? 'confirmed' : 'queued',
        points: Math.abs(ans.delta),
        net: ans.delta,
        code: state.customer ? (state.customer.code || state.customer.customer_id) : '',
        at: new Date(),
        balance: ans.balance ? ans.balance.available : null,
        name: state.customer && state.customer.name ? state.customer.name : (state.customer ? state.customer.customer_id : ''),
        txn: ans.txn_id
      };
      $(form === 'earn' ? 'earn-value' : 'redeem-points').value = '';
      renderCustomer();
      renderResult();
      refreshRecent();
      pollSoon();
      var look = $('lookup-input');
      look.focus();
      look.select();
    }, function (f) {
      if (isDefinitive(f)) settled(form);
      var ctx = { write: true };
      if (f.problem && f.problem.code === 'insufficient_points') {
        refreshCustomer().then(function () {
          if (state.customer) setError(errorId, msg('code_insufficient_points', { n: spendable(state.customer) }));
        });
        ctx.spendable = state.customer ? spendable(state.customer) : undefined;
      }
      if (f.status !== 401) setError(errorId, failureMsg(f, ctx));
    }).then(function () {
      state.busy[form] = false;
      $(form + '-submit').disabled = false;
      renderEarn();
      renderRedeem();
    });
  }

  function renderResult() {
    var r = state.result;
    var el = $('result');
    if (!r) {
      el.setAttribute('data-status', 'none');
      show(el, false);
      return;
    }
    el.setAttribute('data-status', r.status);
    el.setAttribute('data-txn-id', r.txn || '');
    el.setAttribute('data-kind', r.kind);
    setText('result-title', t('result_' + r.status));
    var detail = r.kind === 'sale'
      ? t('result_sale', { name: r.name, amount: fmt(r.amount), used: fmt(r.used), earned: fmt(r.earned), balance: fmt(r.balance), sale: r.sale })
      : t(r.kind === 'earn' ? 'result_earn' : 'result_redeem',
        { name: r.name, points: fmt(r.points), balance: fmt(r.balance) });
    if (r.status === 'queued') detail += ' ' + t('result_queued_help');
    if (r.status === 'confirmed' && r.synced) detail += ' ' + t('result_synced');
    if (r.status === 'rejected') detail = t('code_upstream_rejected');
    setText('result-detail', detail);
    show($('slip-print').parentNode, r.status !== 'rejected' && !!(r.kind === 'sale' ? r.sale : r.txn));
    show(el, true);
  }

  /* ------------------------------------------------------------------ point slip */

  /* Code 128 (set B) bar and space widths for values 0-106 (106: stop with its final bar). */
  var C128 = [
    '212222', '222122', '222221', '121223', '121322', '131222', '122213', '122312', '132212', '221213',
    '221312', '231212', '112232', '122132', '122231', '113222', '123122', '123221', '223211', '221132',
    '221231', '213212', '223112', '312131', '311222', '321122', '321221', '312212', '322112', '322211',
    '212123', '212321', '232121', '111323', '131123', '131321', '112313', '132113', '132311', '211313',
    '231113', '231311', '112133', '112331', '132131', '113123', '113321', '133121', '313121', '211331',
    '231131', '213113', '213311', '213131', '311123', '311321', '331121', '312113', '312311', '332111',
    '314111', '221411', '431111', '111224', '111422', '121124', '121421', '141122', '141221', '112214',
    '112412', '122114', '122411', '142112', '142211', '241211', '221114', '413111', '241112', '134111',
    '111242', '121142', '121241', '114212', '124112', '124211', '411212', '421112', '421211', '212141',
    '214121', '412121', '111143', '111341', '131141', '114113', '114311', '411113', '411311', '113141',
    '114131', '311141', '411131', '211412', '211214', '211232', '2331112'
  ];

  /* The module widths of `text` (printable ASCII) in Code 128 B: start B, data, check, stop. */
  function code128Widths(text) {
    var codes = [104];
    for (var i = 0; i < text.length; i++) codes.push(text.charCodeAt(i) - 32);
    var sum = 104;
    for (var k = 1; k < codes.length; k++) sum += codes[k] * k;
    codes.push(sum % 103);
    codes.push(106);
    var w = '';
    for (var m = 0; m < codes.length; m++) w += C128[codes[m]];
    return w;
  }

  function drawBarcode(svg, text) {
    var NS = svg.namespaceURI;  // the page's own <svg>: no namespace URL in the assets
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var w = code128Widths(text);
    var quiet = 10, x = quiet;
    for (var i = 0; i < w.length; i++) {
      var n = w.charCodeAt(i) - 48;
      if (i % 2 === 0) {
        var r = document.createElementNS(NS, 'rect');
        r.setAttribute('x', String(x));
        r.setAttribute('y', '0');
        r.setAttribute('width', String(n));
        r.setAttribute('height', '40');
        svg.appendChild(r);
      }
      x += n;
    }
    svg.setAttribute('viewBox', '0 0 ' + (x + quiet) + ' 40');
    svg.setAttribute('data-value', text);
    svg.setAttribute('data-modules', String(x - quiet));
    svg.setAttribute('aria-label', text);
  }

  /* What the slip shows for the last sale, earn, redeem (`which` = 'result') or return. */
  function slipOf(which) {
    var r = which === 'return' ? state.returnResult : state.result;
    if (!r) return null;
    if (which === 'return') {
      // A return takes earned points back and gives used points back: shown as negatives.
      return { kind: 'return', status: r.status, id: r.id, earned: r.taken ? -r.taken : 0, used: r.given ? -r.given : 0,
        balance: r.balance, code: r.code, at: r.at };
    }
    return { kind: r.kind, status: r.status, id: r.kind === 'sale' ? r.sale : r.txn,
      earned: r.kind === 'sale' ? r.earned : r.kind === 'earn' ? r.points : 0,
      used: r.kind === 'sale' ? r.used : r.kind === 'redeem' ? r.points : 0,
      earnedBy: r.earnedBy, balance: r.balance, code: r.code, at: r.at };
  }

  /* The slip: what a receipt printer prints. */
  function renderSlip(which) {
    var r = slipOf(which);
    if (!r) return false;
    var id = r.id;
    var earned = r.earned, used = r.used;
    var before = r.balance === null || r.balance === undefined ? null : r.balance - (earned - used);
    var c = state.config;
    setText('slip-title', t('slip_title_' + r.kind));
    setText('slip-store', t('slip_store', { store: c ? c.store_id : '' }));
    setText('slip-time', (r.at || new Date()).toLocaleString(state.lang === 'en' ? 'en-GB' : 'ja-JP'));
    setText('slip-member', r.code || '');
    setText('slip-before', fmt(before) + ' ' + t('pt'));
    setText('slip-earned', r.kind === 'sale' && r.earnedBy === 'register'
      ? t('slip_by_register') : (earned < 0 ? signed(earned) : fmt(earned)) + ' ' + t('pt'));
    setText('slip-used', (used < 0 ? signed(used) : fmt(used)) + ' ' + t('pt'));
    setText('slip-after', fmt(r.balance) + ' ' + t('pt'));
    setText('slip-status', t(r.status === 'confirmed' ? 'slip_confirmed' : 'slip_queued'));
    setText('slip-id', id || '');
    drawBarcode($('slip-barcode'), id || '');
    $('slip').setAttribute('data-kind', r.kind);
    $('slip').setAttribute('data-status', r.status);
    return true;
  }

  function printSlip(which) {
    if (!renderSlip(which)) return;
    var width = $('slip-width').value === '80' ? '80' : '58';
    save('local', LS_SLIP_WIDTH, width);
    document.documentElement.setAttribute('data-slip-width', width);
    window.print();
  }

  /* A result that said "saved — will sync" follows its transaction until it settles. */
  function refreshResult() {
    var r = state.result;
    if (!r || r.status !== 'queued' || !r.txn) return;
    api('GET', '/v1/transactions/' + encodeURIComponent(r.txn), undefined, { timeout: 8000 }).then(function (x) {
      if (state.result !== r || !x) return;
      if (x.state === 'applied') { r.status = 'confirmed'; r.synced = true; }
      else if (x.state === 'rejected' || x.state === 'discarded') r.status = 'rejected';
      else return;
      renderResult();
    }, function () { /* the next poll tries again */ });
  }

  /* ------------------------------------------------------------------ look-up */

  function submitLookup(ev) {
    ev.preventDefault();
    var input = $('lookup-input');
    var q = input.value.replace(/^\s+|\s+$/g, '');
    setError('lookup-error', null);
    if (!q) {
      setError('lookup-error', msg('lookup_empty'));
      input.focus();
      return;
    }
    if (state.busy.lookup) return;
    state.busy.lookup = true;
    $('lookup-submit').disabled = true;
    api('GET', '/v1/customers?q=' + encodeURIComponent(q), undefined, { timeout: 10000 }).then(function (c) {
      var changed = !state.customer || state.customer.customer_id !== c.customer_id;
      state.customer = c;
      // A new look-up starts over; the last result stays only for the same customer.
      setError('earn-error', null);
      setError('redeem-error', null);
      setError('sale-error', null);
      if (changed) {
        state.result = null;
        $('earn-value').value = '';
        $('redeem-points').value = '';
        $('sale-amount').value = '';
        $('sale-use').value = '';
        $('sale-receipt').value = '';
        state.saleQuote = null;
        state.saleMax = null;
      }
      renderCustomer();
      renderSale();
      renderResult();
      renderEarn();
      renderRedeem();
      input.select();
    }, function (f) {
      if (f.status !== 401) setError('lookup-error', failureMsg(f, {}));
      input.focus();
      input.select();
    }).then(function () {
      state.busy.lookup = false;
      $('lookup-submit').disabled = false;
    });
  }

  /* Re-reads the customer on screen (after the queue moved, or a refused redeem). */
  function refreshCustomer() {
    var c = state.customer;
    if (!c) return Promise.resolve();
    var id = c.customer_id;
    return api('GET', '/v1/customers/' + encodeURIComponent(id), undefined, { timeout: 8000 }).then(function (fresh) {
      if (state.customer && state.customer.customer_id === id) {
        state.customer = fresh;
        renderCustomer();
        renderRedeem();
      }
    }, function () { /* the next poll tries again */ });
  }

  /* ------------------------------------------------------------------ lists */

  function refreshRecent() {
    if (!state.token) return Promise.resolve();
    var path = '/v1/transactions?limit=20';
    if (state.register) path += '&register_id=' + encodeURIComponent(state.register);
    return api('GET', path, undefined, { timeout: 8000 }).then(function (ans) {
      state.recent = ans && ans.transactions ? ans.transactions : [];
      setError('recent-error', null);
      renderRecent();
    }, function (f) {
      if (f.status !== 401) setError('recent-error', failureMsg(f, {}));
    });
  }

  function stateBadge(s) {
    var span = document.createElement('span');
    span.className = 'state';
    span.setAttribute('data-state', s);
    span.textContent = t('state_' + s);
    return span;
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    if (cls) td.className = cls;
    if (typeof text === 'string') td.textContent = text; else td.appendChild(text);
    tr.appendChild(td);
    return td;
  }

  /* The kind, and for a sale or a return the split its net delta stands for. */
  function kindText(x) {
    var k = t('kind_' + x.kind);
    var sp = x.split;
    if (!sp) return k;
    if (x.kind === 'sale') return k + ' (' + t('split_sale', { used: fmt(sp.points_used), earned: fmt(sp.points_earned) }) + ')';
    return k + ' (' + t('split_return', { taken: fmt(sp.points_taken_back), given: fmt(sp.points_given_back) }) + ')';
  }

  function renderRecent() {
    var list = state.recent;
    var body = $('recent-body');
    while (body.firstChild) body.removeChild(body.firstChild);
    var has = !!(list && list.length);
    show($('recent-table'), has);
    show($('recent-empty'), !!list && !has);
    if (!has) return;
    for (var i = 0; i < list.length; i++) {
      var x = list[i];
      var tr = document.createElement('tr');
      tr.setAttribute('data-txn-id', x.txn_id);
      tr.setAttribute('data-state', x.state);
      cell(tr, dateTime(x.created_at));
      cell(tr, x.customer_id);
      cell(tr, kindText(x));
      cell(tr, signed(x.delta), 'num');
      cell(tr, stateBadge(x.state));
      body.appendChild(tr);
    }
  }

  /* The review queue is for manager tokens: ask the daemon which role this token has. */
  function probeRole() {
    return api('GET', '/v1/whoami', undefined, { timeout: 8000 }).then(function (ans) {
      state.role = ans && ans.role === 'manager' ? 'manager' : 'register';
    }, function () {
      state.role = null;
    }).then(function () {
      renderReview();
      if (state.role === 'manager') return refreshReview();
    });
  }

  function refreshReview() {
    if (state.role !== 'manager') return Promise.resolve();
    return api('GET', '/v1/transactions?state=needs_review&limit=50', undefined, { timeout: 8000 }).then(function (ans) {
      state.review = ans && ans.transactions ? ans.transactions : [];
      renderReview();
    }, function () { /* the next poll tries again */ });
  }

  function evidenceOf(x) {
    var e = x.upstream_result;
    if (e && typeof e === 'object' && e.before_balance !== undefined) return e;
    return null;
  }

  function renderReview() {
    var section = $('review');
    show(section, state.role === 'manager');
    if (state.role !== 'manager') return;
    var m = $('review-message');
    if (state.reviewMessage) {
      m.textContent = msgText(state.reviewMessage.m);
      m.className = 'result-inline' + (state.reviewMessage.error ? ' is-error' : '');
      show(m, true);
    } else {
      show(m, false);
    }
    var listEl = $('review-list');
    var list = state.review || [];
    // Keep notes a manager is typing across re-renders.
    var notes = {};
    var inputs = listEl.querySelectorAll('input[data-note-for]');
    for (var j = 0; j < inputs.length; j++) notes[inputs[j].getAttribute('data-note-for')] = inputs[j].value;
    var focused = document.activeElement && listEl.contains(document.activeElement) ? document.activeElement.id : null;
    while (listEl.firstChild) listEl.removeChild(listEl.firstChild);
    show($('review-empty'), !!state.review && list.length === 0);
    for (var i = 0; i < list.length; i++) listEl.appendChild(reviewItem(list[i], i, notes));
    if (focused && $(focused)) $(focused).focus();
  }

  function reviewItem(x, i, notes) {
    var li = document.createElement('li');
    li.className = 'review-item';
    li.setAttribute('data-txn-id', x.txn_id);
    var title = document.createElement('p');
    var strong = document.createElement('strong');
    strong.textContent = x.txn_id;
    title.appendChild(strong);
    li.appendChild(title);
    var what = document.createElement('p');
    what.textContent = t('review_what', {
      time: dateTime(x.created_at), customer: x.customer_id, kind: t('kind_' + x.kind),
      points: signed(x.delta), register: x.register_id || x.token_name
    });
    li.appendChild(what);
    var e = evidenceOf(x);
    if (e) {
      var ev = document.createElement('p');
      ev.className = 'muted';
      ev.textContent = t('review_evidence', {
        before: fmt(e.before_balance), expected: fmt(e.expected_if_applied), after: fmt(e.read_back_balance)
      });
      li.appendChild(ev);
    }
    var form = document.createElement('form');
    form.setAttribute('novalidate', '');
    var noteId = 'review-note-' + i;
    var label = document.createElement('label');
    label.setAttribute('for', noteId);
    label.textContent = t('review_note');
    var input = document.createElement('input');
    input.type = 'text';
    input.id = noteId;
    input.maxLength = 500;
    input.autocomplete = 'off';
    input.setAttribute('data-note-for', x.txn_id);
    input.value = notes[x.txn_id] || '';
    form.appendChild(label);
    form.appendChild(input);
    var actions = document.createElement('div');
    actions.className = 'actions';
    var kinds = ['applied', 'resend', 'discard'];
    for (var k = 0; k < kinds.length; k++) {
      var b = document.createElement('button');
      b.type = 'button';
      b.id = 'review-' + kinds[k] + '-' + i;
      b.className = kinds[k] === 'discard' ? 'danger' : '';
      b.setAttribute('data-action', kinds[k]);
      b.setAttribute('data-txn-id', x.txn_id);
      b.textContent = t('review_' + kinds[k]);
      b.addEventListener('click', onResolve);
      actions.appendChild(b);
    }
    form.appendChild(actions);
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      state.reviewMessage = { m: msg('review_need_note'), error: true };
      renderReview();
    });
    li.appendChild(form);
    return li;
  }

  function onResolve(ev) {
    var b = ev.currentTarget;
    var txn = b.getAttribute('data-txn-id');
    var action = b.getAttribute('data-action');
    var input = b.form ? b.form.querySelector('input[data-note-for]') : null;
    var note = input ? input.value.replace(/^\s+|\s+$/g, '') : '';
    if (!note) {
      state.reviewMessage = { m: msg('review_need_note'), error: true };
      renderReview();
      var notes = document.querySelectorAll('#review-list input[data-note-for]');
      for (var i = 0; i < notes.length; i++) {
        if (notes[i].getAttribute('data-note-for') === txn) notes[i].focus();
      }
      return;
    }
    b.disabled = true;
    api('POST', '/v1/transactions/' + encodeURIComponent(txn) + '/resolve', { as: action, note: note }, { timeout: 10000 })
      .then(function () {
        state.reviewMessage = { m: msg('review_done', { txn: txn, action: function () { return t('review_' + action); } }) };
        if (input) input.value = '';
        return refreshReview().then(refreshRecent);
      }, function (f) {
        if (f.status === 403) { state.role = 'register'; state.review = null; }
        else if (f.status !== 401) state.reviewMessage = { m: failureMsg(f, { txn: true }), error: true };
        b.disabled = false;
        renderReview();
      });
  }

  function renderFooter() {
    var c = state.config;
    var g = granting();
    setText('footer-info', state.token && c
      ? t('footer', { store: c.store_id, register: state.register || '—', version: c.version })
        + (g ? ' · ' + t('footer_granting', { by: t('granted_by_' + g.granted_by) }) : '') : '');
  }

  /* ------------------------------------------------------------------ polling */

  function queueSig(s) {
    if (!s || !s.queue) return '';
    var q = s.queue;
    return [s.online, q.pending, q.sending, q.ambiguous, q.needs_review, q.rejected, q.applied].join('/');
  }

  function poll() {
    state.pollTimer = null;
    if (!state.token) return;
    api('GET', '/v1/status', undefined, { timeout: 4000 }).then(function (s) {
      state.status = s;
      state.reachable = true;
    }, function (f) {
      if (f.status === 401) return;
      state.reachable = f.network ? false : state.reachable;
    }).then(function () {
      if (!state.token) return;
      var grants = registerGrants();
      if (grants !== state.lastGrants) {
        state.lastGrants = grants;
        renderEarn();
        renderSale();
        renderFooter();
      }
      var wasOnline = state.lastOnline;
      state.lastOnline = isOnline();
      state.banner = computeBanner();
      renderConn();
      renderBanner();
      if (wasOnline !== state.lastOnline) {
        // A refusal because the store was offline no longer applies once it is back.
        var e = state.errors['redeem-error'];
        if (state.lastOnline && e && e.key && e.key.indexOf('code_offline') === 0) setError('redeem-error', null);
        renderRedeem();
      }
      var sig = queueSig(state.status) + '/' + state.reachable;
      if (sig !== state.lastSig) {
        state.lastSig = sig;
        refreshRecent();
        refreshReview();
        refreshCustomer();
        refreshResult();
        if (state.returnSale) loadReturnSale(state.returnSale.sale_id, false);
      }
      schedulePoll(POLL_MS);
    });
  }
  function schedulePoll(ms) {
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(poll, ms);
  }
  function pollSoon() { schedulePoll(300); }

  /* ------------------------------------------------------------------ sign-in */

  function loadConfig() {
    return api('GET', '/page/config.json', undefined, { token: null, timeout: 8000 }).then(function (c) {
      state.config = c;
      renderEarn();
      renderRedeem();
      renderFooter();
    }, function () { /* defaults (1 pt per 100 yen) until the next sign-in */ });
  }

  function showSignedIn() {
    show($('signin'), false);
    show($('app'), true);
    show($('signout'), true);
    $('lookup-input').focus();
    renderAll();
    refreshRecent();
    probeRole();
    schedulePoll(0);
  }

  function showSignIn() {
    show($('app'), false);
    show($('signout'), false);
    show($('signin'), true);
    $('register-input').value = state.register || newRegisterId();
    $('token-input').value = '';
    $('token-input').focus();
    renderAll();
  }

  function submitSignIn(ev) {
    ev.preventDefault();
    if (state.busy.signin) return;
    var token = $('token-input').value.replace(/^\s+|\s+$/g, '');
    var register = $('register-input').value.replace(/^\s+|\s+$/g, '');
    setError('signin-error', null);
    if (!token) {
      setError('signin-error', msg('err_token_empty'));
      $('token-input').focus();
      return;
    }
    if (!register) register = newRegisterId();
    if (!validId(register)) {
      setError('signin-error', msg('err_register_id'));
      $('register-input').focus();
      return;
    }
    state.busy.signin = true;
    $('signin-submit').disabled = true;
    api('GET', '/v1/status', undefined, { token: token, signin: true, timeout: 8000 }).then(function (s) {
      state.token = token;
      state.register = register;
      state.status = s;
      state.reachable = true;
      save('local', LS_TOKEN, token);
      save('local', LS_REGISTER, register);
      $('token-input').value = '';
      loadConfig();
      showSignedIn();
    }, function (f) {
      setError('signin-error', f.status === 401 ? msg('err_token_bad') : failureMsg(f, {}));
      $('token-input').focus();
      $('token-input').select();
    }).then(function () {
      state.busy.signin = false;
      $('signin-submit').disabled = false;
    });
  }

  function signOut(why) {
    state.token = null;
    save('local', LS_TOKEN, null);
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
    state.status = null;
    state.reachable = true;
    state.customer = null;
    state.result = null;
    state.recent = null;
    state.review = null;
    state.role = null;
    state.banner = null;
    state.lastSig = '';
    state.reviewMessage = null;
    state.saleQuote = null;
    state.saleMax = null;
    state.returnSale = null;
    state.returnResult = null;
    state.errors = {};
    state.errors['signin-error'] = why || null;
    $('lookup-input').value = '';
    $('return-sale-input').value = '';
    showSignIn();
  }

  /* ------------------------------------------------------------------ start */

  function start() {
    var lang = load('local', LS_LANG);
    state.lang = lang === 'en' ? 'en' : 'ja';
    state.token = load('local', LS_TOKEN);
    state.register = load('local', LS_REGISTER);

    $('lang-toggle').addEventListener('click', function () {
      state.lang = state.lang === 'ja' ? 'en' : 'ja';
      save('local', LS_LANG, state.lang);
      renderAll();
    });
    $('signout').addEventListener('click', function () { signOut(msg('signed_out')); });
    $('signin-form').addEventListener('submit', submitSignIn);
    $('lookup-form').addEventListener('submit', submitLookup);
    $('sale-form').addEventListener('submit', submitSale);
    $('sale-amount').addEventListener('input', onSaleInput);
    $('sale-use').addEventListener('input', onSaleInput);
    $('sale-use-all').addEventListener('click', useAll);
    $('slip-print').addEventListener('click', function () { printSlip('result'); });
    $('return-slip-print').addEventListener('click', function () { printSlip('return'); });
    var slipWidth = load('local', LS_SLIP_WIDTH) === '80' ? '80' : '58';
    $('slip-width').value = slipWidth;
    document.documentElement.setAttribute('data-slip-width', slipWidth);
    $('return-lookup-form').addEventListener('submit', submitReturnLookup);
    $('return-form').addEventListener('submit', function (ev) { ev.preventDefault(); sendReturn(false); });
    $('return-all').addEventListener('click', function () { sendReturn(true); });
    $('return-amount').addEventListener('input', function () { setError('return-error', null); renderReturn(); });
    $('return-sale-input').addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape') { ev.target.value = ''; setError('return-lookup-error', null); }
    });
    $('earn-form').addEventListener('submit', submitEarn);
    $('redeem-form').addEventListener('submit', submitRedeem);
    $('earn-value').addEventListener('input', function () { setError('earn-error', null); renderEarn(); });
    $('redeem-points').addEventListener('input', function () { setError('redeem-error', null); renderRedeem(); });
    $('earn-mode-amount').addEventListener('change', function () { renderEarn(); $('earn-value').focus(); });
    $('earn-mode-points').addEventListener('change', function () { renderEarn(); $('earn-value').focus(); });
    $('lookup-input').addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape') { ev.target.value = ''; setError('lookup-error', null); }
    });

    loadConfig();
    if (state.token) {
      showSignedIn();
    } else {
      showSignIn();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
