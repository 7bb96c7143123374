-- Matomo 5 compatible schema for matomo-erase tests and for matomo-gen.
--
-- The table prefix is the literal token {{PREFIX}} and must be substituted before loading
-- (an empty prefix is valid). Each statement ends with a semicolon at the end of a line, so a
-- loader can split on that. Comments never contain a semicolon.
--
-- Core tables follow what a Matomo 5.0/5.1 install has (five custom dimension slots, no custom
-- variables plugin). The premium plugin tables are modelled on their public descriptions and
-- kept small: they exist so the erase tool meets tables that reach a visit directly (idvisit),
-- indirectly (through another plugin table) or not at all (shared blobs).

CREATE TABLE `{{PREFIX}}log_visit` (
  `idvisit` BIGINT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisitor` BINARY(8) NOT NULL,
  `visit_last_action_time` DATETIME NOT NULL,
  `config_id` BINARY(8) NOT NULL,
  `location_ip` VARBINARY(16) NOT NULL,
  `profilable` TINYINT(1) NULL,
  `user_id` VARCHAR(200) NULL,
  `visit_first_action_time` DATETIME NOT NULL,
  `visit_goal_buyer` TINYINT(1) NULL,
  `visit_goal_converted` TINYINT(1) NULL,
  `visitor_returning` TINYINT(1) NULL,
  `visitor_seconds_since_first` INT(11) UNSIGNED NULL,
  `visitor_seconds_since_order` INT(11) UNSIGNED NULL,
  `visitor_count_visits` INT(11) UNSIGNED NOT NULL DEFAULT 0,
  `visit_entry_idaction_name` INT(10) UNSIGNED NULL,
  `visit_entry_idaction_url` INT(11) UNSIGNED NULL,
  `visit_exit_idaction_name` INT(10) UNSIGNED NULL,
  `visit_exit_idaction_url` INT(10) UNSIGNED NULL DEFAULT 0,
  `visit_total_actions` INT(11) UNSIGNED NULL,
  `visit_total_interactions` MEDIUMINT UNSIGNED NULL DEFAULT 0,
  `visit_total_searches` SMALLINT(5) UNSIGNED NULL,
  `referer_keyword` VARCHAR(255) NULL,
  `referer_name` VARCHAR(255) NULL,
  `referer_type` TINYINT(1) UNSIGNED NULL,
  `referer_url` VARCHAR(1500) NULL,
  `location_browser_lang` VARCHAR(20) NULL,
  `config_browser_engine` VARCHAR(10) NULL,
  `config_browser_name` VARCHAR(40) NULL,
  `config_browser_version` VARCHAR(20) NULL,
  `config_client_type` TINYINT(1) NULL,
  `config_device_brand` VARCHAR(100) CHARACTER SET utf8mb3 NULL,
  `config_device_model` VARCHAR(100) CHARACTER SET utf8mb3 NULL,
  `config_device_type` TINYINT(100) NULL,
  `config_os` CHAR(3) NULL,
  `config_os_version` VARCHAR(100) CHARACTER SET utf8mb3 NULL,
  `visit_total_events` INT(11) UNSIGNED NULL,
  `visitor_localtime` TIME NULL,
  `visitor_seconds_since_last` INT(11) UNSIGNED NULL,
  `config_resolution` VARCHAR(18) NULL,
  `config_cookie` TINYINT(1) NULL,
  `config_flash` TINYINT(1) NULL,
  `config_java` TINYINT(1) NULL,
  `config_pdf` TINYINT(1) NULL,
  `config_quicktime` TINYINT(1) NULL,
  `config_realplayer` TINYINT(1) NULL,
  `config_silverlight` TINYINT(1) NULL,
  `config_windowsmedia` TINYINT(1) NULL,
  `visit_total_time` INT(11) UNSIGNED NOT NULL,
  `location_city` VARCHAR(255) NULL,
  `location_country` CHAR(3) NULL,
  `location_latitude` DECIMAL(9, 6) NULL,
  `location_longitude` DECIMAL(9, 6) NULL,
  `location_region` CHAR(3) NULL,
  `last_idlink_va` BIGINT(20) UNSIGNED NULL,
  `custom_dimension_1` VARCHAR(255) NULL,
  `custom_dimension_2` VARCHAR(255) NULL,
  `custom_dimension_3` VARCHAR(255) NULL,
  `custom_dimension_4` VARCHAR(255) NULL,
  `custom_dimension_5` VARCHAR(255) NULL,
  PRIMARY KEY (`idvisit`),
  KEY `index_idsite_config_datetime` (`idsite`, `config_id`, `visit_last_action_time`),
  KEY `index_idsite_datetime` (`idsite`, `visit_last_action_time`),
  KEY `index_idsite_idvisitor_time` (`idsite`, `idvisitor`, `visit_last_action_time` DESC)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}log_link_visit_action` (
  `idlink_va` BIGINT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisitor` BINARY(8) NOT NULL,
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idaction_url_ref` INT(10) UNSIGNED NULL DEFAULT 0,
  `idaction_name_ref` INT(10) UNSIGNED NULL,
  `custom_float` DOUBLE NULL,
  `pageview_position` MEDIUMINT UNSIGNED NULL,
  `server_time` DATETIME NOT NULL,
  `idpageview` CHAR(6) NULL,
  `idaction_name` INT(10) UNSIGNED NULL,
  `idaction_url` INT(10) UNSIGNED NULL,
  `search_cat` VARCHAR(200) NULL,
  `search_count` INT(10) UNSIGNED NULL,
  `time_spent_ref_action` INT(10) UNSIGNED NULL,
  `idaction_product_cat` INT(10) UNSIGNED NULL,
  `idaction_product_cat2` INT(10) UNSIGNED NULL,
  `idaction_product_cat3` INT(10) UNSIGNED NULL,
  `idaction_product_cat4` INT(10) UNSIGNED NULL,
  `idaction_product_cat5` INT(10) UNSIGNED NULL,
  `idaction_product_name` INT(10) UNSIGNED NULL,
  `product_price` DOUBLE NULL,
  `idaction_product_sku` INT(10) UNSIGNED NULL,
  `idaction_event_action` INT(10) UNSIGNED NULL,
  `idaction_event_category` INT(10) UNSIGNED NULL,
  `idaction_content_interaction` INT(10) UNSIGNED NULL,
  `idaction_content_name` INT(10) UNSIGNED NULL,
  `idaction_content_piece` INT(10) UNSIGNED NULL,
  `idaction_content_target` INT(10) UNSIGNED NULL,
  `time_dom_completion` MEDIUMINT(10) UNSIGNED NULL,
  `time_dom_processing` MEDIUMINT(10) UNSIGNED NULL,
  `time_network` MEDIUMINT(10) UNSIGNED NULL,
  `time_on_load` MEDIUMINT(10) UNSIGNED NULL,
  `time_server` MEDIUMINT(10) UNSIGNED NULL,
  `time_transfer` MEDIUMINT(10) UNSIGNED NULL,
  `time_spent` INT(10) UNSIGNED NULL,
  `custom_dimension_1` VARCHAR(255) NULL,
  `custom_dimension_2` VARCHAR(255) NULL,
  `custom_dimension_3` VARCHAR(255) NULL,
  `custom_dimension_4` VARCHAR(255) NULL,
  `custom_dimension_5` VARCHAR(255) NULL,
  PRIMARY KEY (`idlink_va`),
  KEY `index_idvisit` (`idvisit`),
  KEY `index_idsite_servertime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}log_conversion` (
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisitor` BINARY(8) NOT NULL,
  `server_time` DATETIME NOT NULL,
  `idaction_url` INT(10) UNSIGNED NULL,
  `idlink_va` BIGINT(10) UNSIGNED NULL,
  `idgoal` INT(10) NOT NULL,
  `buster` INT(10) UNSIGNED NOT NULL,
  `idorder` VARCHAR(100) NULL,
  `items` SMALLINT(5) UNSIGNED NULL,
  `url` VARCHAR(4096) NOT NULL,
  `revenue` FLOAT NULL,
  `revenue_shipping` DOUBLE NULL,
  `revenue_subtotal` DOUBLE NULL,
  `revenue_tax` DOUBLE NULL,
  `revenue_discount` DOUBLE NULL,
  `pageviews_before` SMALLINT(5) UNSIGNED NULL,
  `visitor_returning` TINYINT(1) NULL,
  `visitor_seconds_since_first` INT(11) UNSIGNED NULL,
  `visitor_seconds_since_order` INT(11) UNSIGNED NULL,
  `visitor_count_visits` INT(11) UNSIGNED NOT NULL DEFAULT 0,
  `referer_keyword` VARCHAR(255) NULL,
  `referer_name` VARCHAR(255) NULL,
  `referer_type` TINYINT(1) UNSIGNED NULL,
  `config_browser_name` VARCHAR(40) NULL,
  `config_client_type` TINYINT(1) NULL,
  `config_device_brand` VARCHAR(100) CHARACTER SET utf8mb3 NULL,
  `config_device_model` VARCHAR(100) CHARACTER SET utf8mb3 NULL,
  `config_device_type` TINYINT(100) NULL,
  `location_city` VARCHAR(255) NULL,
  `location_country` CHAR(3) NULL,
  `location_latitude` DECIMAL(9, 6) NULL,
  `location_longitude` DECIMAL(9, 6) NULL,
  `location_region` CHAR(3) NULL,
  `custom_dimension_1` VARCHAR(255) NULL,
  `custom_dimension_2` VARCHAR(255) NULL,
  `custom_dimension_3` VARCHAR(255) NULL,
  `custom_dimension_4` VARCHAR(255) NULL,
  `custom_dimension_5` VARCHAR(255) NULL,
  PRIMARY KEY (`idvisit`, `idgoal`, `buster`),
  UNIQUE KEY `unique_idsite_idorder` (`idsite`, `idorder`),
  KEY `index_idsite_datetime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}log_conversion_item` (
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisitor` BINARY(8) NOT NULL,
  `server_time` DATETIME NOT NULL,
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idorder` VARCHAR(100) NOT NULL,
  `idaction_sku` INT(10) UNSIGNED NOT NULL,
  `idaction_name` INT(10) UNSIGNED NOT NULL,
  `idaction_category` INT(10) UNSIGNED NOT NULL,
  `idaction_category2` INT(10) UNSIGNED NOT NULL,
  `idaction_category3` INT(10) UNSIGNED NOT NULL,
  `idaction_category4` INT(10) UNSIGNED NOT NULL,
  `idaction_category5` INT(10) UNSIGNED NOT NULL,
  `price` DOUBLE NOT NULL,
  `quantity` INT(10) UNSIGNED NOT NULL,
  `deleted` TINYINT(1) UNSIGNED NOT NULL,
  PRIMARY KEY (`idvisit`, `idorder`, `idaction_sku`),
  KEY `index_idsite_servertime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}log_action` (
  `idaction` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `name` VARCHAR(4096) NULL,
  `hash` INT(10) UNSIGNED NOT NULL,
  `type` TINYINT UNSIGNED NULL,
  `url_prefix` TINYINT(2) NULL,
  PRIMARY KEY (`idaction`),
  KEY `index_type_hash` (`type`, `hash`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}log_profiling` (
  `query` TEXT NOT NULL,
  `count` INT(10) UNSIGNED NULL,
  `sum_time_ms` FLOAT NULL,
  `idprofiling` BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  PRIMARY KEY (`idprofiling`),
  UNIQUE KEY `query` (`query`(100))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}site` (
  `idsite` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `name` VARCHAR(90) NOT NULL,
  `main_url` VARCHAR(255) NOT NULL,
  `ts_created` TIMESTAMP NULL,
  `ecommerce` TINYINT DEFAULT 0,
  `sitesearch` TINYINT DEFAULT 1,
  `sitesearch_keyword_parameters` TEXT NOT NULL,
  `sitesearch_category_parameters` TEXT NOT NULL,
  `timezone` VARCHAR(50) NOT NULL,
  `currency` CHAR(3) NOT NULL,
  `exclude_unknown_urls` TINYINT(1) DEFAULT 0,
  `excluded_ips` TEXT NOT NULL,
  `excluded_parameters` TEXT NOT NULL,
  `excluded_user_agents` TEXT NOT NULL,
  `excluded_referrers` TEXT NOT NULL,
  `group` VARCHAR(250) NOT NULL,
  `type` VARCHAR(255) NOT NULL,
  `keep_url_fragment` TINYINT NOT NULL DEFAULT 0,
  `creator_login` VARCHAR(100) NULL,
  PRIMARY KEY (`idsite`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}option` (
  `option_name` VARCHAR(191) NOT NULL,
  `option_value` LONGTEXT NOT NULL,
  `autoload` TINYINT NOT NULL DEFAULT 1,
  PRIMARY KEY (`option_name`),
  KEY `autoload` (`autoload`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}archive_invalidations` (
  `idinvalidation` BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idarchive` INT(10) UNSIGNED NULL,
  `name` VARCHAR(255) NOT NULL,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `date1` DATE NOT NULL,
  `date2` DATE NOT NULL,
  `period` TINYINT UNSIGNED NOT NULL,
  `ts_invalidated` DATETIME NULL,
  `ts_started` DATETIME NULL,
  `status` TINYINT(1) UNSIGNED DEFAULT 0,
  `report` VARCHAR(255) NULL,
  PRIMARY KEY (`idinvalidation`),
  KEY `index_idsite_dates_period_name` (`idsite`, `date1`, `period`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}segment` (
  `idsegment` INT(11) NOT NULL AUTO_INCREMENT,
  `name` VARCHAR(255) NOT NULL,
  `definition` TEXT NOT NULL,
  `hash` CHAR(32) NULL,
  `login` VARCHAR(100) NOT NULL,
  `enable_all_users` TINYINT NOT NULL DEFAULT 0,
  `enable_only_idsite` INT(11) NULL,
  `auto_archive` TINYINT NOT NULL DEFAULT 0,
  `ts_created` TIMESTAMP NULL,
  `ts_last_edit` TIMESTAMP NULL,
  `deleted` TINYINT NOT NULL DEFAULT 0,
  PRIMARY KEY (`idsegment`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}sequence` (
  `name` VARCHAR(120) NOT NULL,
  `value` BIGINT(20) UNSIGNED NOT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}archive_numeric_2024_01` (
  `idarchive` INT(10) UNSIGNED NOT NULL,
  `name` VARCHAR(190) NOT NULL,
  `idsite` INT(10) UNSIGNED NULL,
  `date1` DATE NULL,
  `date2` DATE NULL,
  `period` TINYINT UNSIGNED NULL,
  `ts_archived` DATETIME NULL,
  `value` DOUBLE NULL,
  PRIMARY KEY (`idarchive`, `name`),
  KEY `index_idsite_dates_period` (`idsite`, `date1`, `date2`, `period`, `name`(6)),
  KEY `index_period_archived` (`period`, `ts_archived`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

CREATE TABLE `{{PREFIX}}archive_blob_2024_01` (
  `idarchive` INT(10) UNSIGNED NOT NULL,
  `name` VARCHAR(190) NOT NULL,
  `idsite` INT(10) UNSIGNED NULL,
  `date1` DATE NULL,
  `date2` DATE NULL,
  `period` TINYINT UNSIGNED NULL,
  `ts_archived` DATETIME NULL,
  `value` MEDIUMBLOB NULL,
  PRIMARY KEY (`idarchive`, `name`),
  KEY `index_period_archived` (`period`, `ts_archived`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- HeatmapSessionRecording: one row per recorded page view, linked to its visit.
CREATE TABLE `{{PREFIX}}log_hsr` (
  `idloghsr` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idhsrview` CHAR(6) NOT NULL,
  `idpageview` CHAR(6) NULL,
  `idaction_url` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `device_type` TINYINT(1) NOT NULL DEFAULT 1,
  `server_time` DATETIME NOT NULL,
  `time_on_page` BIGINT(8) UNSIGNED NOT NULL DEFAULT 0,
  `viewport_w_px` SMALLINT(5) UNSIGNED DEFAULT 0,
  `viewport_h_px` SMALLINT(5) UNSIGNED DEFAULT 0,
  `scroll_y_max_relative` SMALLINT(5) UNSIGNED DEFAULT 0,
  `fold_y_relative` SMALLINT(5) UNSIGNED DEFAULT 0,
  PRIMARY KEY (`idloghsr`),
  KEY `index_idvisit` (`idvisit`),
  KEY `index_idsite_servertime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- Reaches a visit only through log_hsr.idloghsr.
CREATE TABLE `{{PREFIX}}log_hsr_event` (
  `idhsrevent` BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idloghsr` INT(10) UNSIGNED NOT NULL,
  `time_since_load` BIGINT(8) UNSIGNED NOT NULL DEFAULT 0,
  `event_type` TINYINT UNSIGNED NOT NULL DEFAULT 0,
  `idselector` INT(10) UNSIGNED NULL,
  `x` SMALLINT(5) NOT NULL DEFAULT 0,
  `y` SMALLINT(5) NOT NULL DEFAULT 0,
  `idhsrblob` INT(10) UNSIGNED NULL,
  PRIMARY KEY (`idhsrevent`),
  KEY `index_idloghsr` (`idloghsr`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- Links a recorded page view to each configured heatmap or recording that captured it.
CREATE TABLE `{{PREFIX}}log_hsr_site` (
  `idsitehsr` INT(10) UNSIGNED NOT NULL,
  `idloghsr` INT(10) UNSIGNED NOT NULL,
  PRIMARY KEY (`idsitehsr`, `idloghsr`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- Deduplicated content shared by many recordings: no link to any visit.
CREATE TABLE `{{PREFIX}}log_hsr_blob` (
  `idhsrblob` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `hash` INT(10) UNSIGNED NOT NULL,
  `compressed` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  `value` MEDIUMBLOB NULL,
  PRIMARY KEY (`idhsrblob`),
  KEY `index_hash` (`hash`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- FormAnalytics: one row per form a visit interacted with.
CREATE TABLE `{{PREFIX}}log_form` (
  `idlogform` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idsiteform` INT(10) UNSIGNED NOT NULL,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idvisitor` BINARY(8) NOT NULL,
  `first_idformview` CHAR(6) NOT NULL,
  `last_idformview` CHAR(6) NOT NULL,
  `num_views` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `num_starts` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `num_submissions` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `converted` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  `form_last_action_time` DATETIME NOT NULL,
  `time_hesitation` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `time_spent` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `time_to_first_submission` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (`idlogform`),
  KEY `index_idvisit` (`idvisit`),
  KEY `index_idsite_idsiteform_time` (`idsite`, `idsiteform`, `form_last_action_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- Reaches a visit only through log_form.idlogform.
CREATE TABLE `{{PREFIX}}log_form_page` (
  `idlogformpage` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  `idlogform` INT(10) UNSIGNED NOT NULL,
  `idaction_url` INT(10) UNSIGNED NOT NULL,
  `num_views` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `num_starts` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `num_submissions` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `time_hesitation` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `time_spent` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `time_to_first_submission` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `entry_field_name` VARCHAR(75) NULL,
  `exit_field_name` VARCHAR(75) NULL,
  PRIMARY KEY (`idlogformpage`),
  KEY `index_idlogform` (`idlogform`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- Reaches a visit only through log_form.idlogform.
CREATE TABLE `{{PREFIX}}log_form_field` (
  `idlogform` INT(10) UNSIGNED NOT NULL,
  `idlogformpage` INT(10) UNSIGNED NOT NULL,
  `idformview` CHAR(6) NOT NULL,
  `idpageview` CHAR(6) NULL,
  `field_name` VARCHAR(75) NOT NULL,
  `time_spent` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `time_hesitation` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `field_size` INT(10) UNSIGNED NOT NULL DEFAULT 0,
  `left_blank` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  `submitted` TINYINT UNSIGNED NOT NULL DEFAULT 0,
  `num_changes` SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  `num_focus` SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  `num_deletes` SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  `num_cursor` SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (`idlogform`, `idlogformpage`, `idformview`, `field_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- MediaAnalytics: one row per media element shown in a visit.
CREATE TABLE `{{PREFIX}}log_media` (
  `idvisitor` BINARY(8) NOT NULL,
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idview` CHAR(6) NOT NULL,
  `player_name` VARCHAR(20) NULL,
  `media_type` TINYINT UNSIGNED NOT NULL,
  `resolution` VARCHAR(20) NULL,
  `fullscreen` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  `media_title` VARCHAR(150) NULL,
  `resource` VARCHAR(300) NULL,
  `server_time` DATETIME NOT NULL,
  `time_to_initial_play` MEDIUMINT UNSIGNED NULL,
  `watched_time` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `media_progress` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  `media_length` MEDIUMINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (`idvisit`, `idview`),
  KEY `index_idsite_servertime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- AbTesting: which experiment variation a visit took part in.
CREATE TABLE `{{PREFIX}}log_abtesting` (
  `idvisitor` BINARY(8) NOT NULL,
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idexperiment` INT(10) UNSIGNED NOT NULL,
  `idvariation` INT(10) UNSIGNED NOT NULL,
  `entered` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  `server_time` DATETIME NOT NULL,
  PRIMARY KEY (`idvisit`, `idexperiment`),
  KEY `index_idsite_servertime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

-- AdvertisingConversionExport: the ad click id a visit arrived with.
CREATE TABLE `{{PREFIX}}log_clickid` (
  `idvisit` BIGINT(10) UNSIGNED NOT NULL,
  `idsite` INT(10) UNSIGNED NOT NULL,
  `idvisitor` BINARY(8) NOT NULL,
  `server_time` DATETIME NOT NULL,
  `adclickid` VARCHAR(255) NOT NULL,
  `adprovider` VARCHAR(50) NOT NULL,
  PRIMARY KEY (`idvisit`),
  KEY `index_idsite_servertime` (`idsite`, `server_time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci ROW_FORMAT=DYNAMIC;

INSERT INTO `{{PREFIX}}option` (`option_name`, `option_value`, `autoload`) VALUES ('version_core', '5.1.0', 1);
